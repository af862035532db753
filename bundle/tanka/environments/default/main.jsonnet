// The default MOP environment: per mop-* namespace, a ServiceAccount the component runs as
// and a ConfigMap with the shared settings it reads. Namespaces come from spec.namespaces
// (the namespace stage makes them); spec.json's namespace applies to objects without one.
local config = (import 'mop/config.libsonnet')._config;

local component(key, ns) = {
  local labels = config.labels { 'app.kubernetes.io/component': key },
  serviceAccount: {
    apiVersion: 'v1',
    kind: 'ServiceAccount',
    metadata: { name: 'mop-' + key, namespace: ns, labels: labels },
    automountServiceAccountToken: false,
  },
  config: {
    apiVersion: 'v1',
    kind: 'ConfigMap',
    metadata: { name: 'mop-' + key + '-config', namespace: ns, labels: labels },
    data: {
      'cluster': config.cluster,
      'component': key,
      [if std.objectHas(config.retention, key) then 'retention']: config.retention[key],
      'config.json': std.manifestJsonEx({ cluster: config.cluster, namespace: ns }, '  '),
    },
  },
};

{
  components: {
    [key]: component(key, config.namespaces[key])
    for key in std.objectFields(config.namespaces)
  },
  // No namespace given: spec.json's (mop-system) is put on it, as Tanka does.
  platform: {
    apiVersion: 'v1',
    kind: 'ConfigMap',
    metadata: { name: 'mop-platform', labels: config.labels },
    data: { namespaces: std.join(',', std.objectValues(config.namespaces)) },
  },
}
