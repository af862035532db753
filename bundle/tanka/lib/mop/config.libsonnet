// The observability platform (MOP): its namespaces and the settings its components share.
// Environments import this as `mop/config.libsonnet` (from <root>/lib on Tanka's jpath).
{
  _config+:: {
    platform: 'mop',
    cluster: 'dgx-spark',
    // One namespace per MOP component; each must be declared in spec.namespaces.
    namespaces: {
      system: 'mop-system',
      traces: 'mop-traces',
      metrics: 'mop-metrics',
      logs: 'mop-logs',
    },
    retention: {
      traces: '72h',
      metrics: '15d',
      logs: '7d',
    },
    labels: {
      'app.kubernetes.io/part-of': 'mop',
    },
  },
}
