# A small bundle for the VM tests, made entirely inside the build sandbox (no network): two
# images built with dockerTools that share their busybox layer, pushed with skopeo into a
# docker-distribution registry listening on the sandbox's own loopback, and nixpkgs' k3s binary
# served over loopback too. Then the real path: `sparkgap lock` against that registry and
# `sparkgap build`, as a user would on a connected machine.
{ stdenv
, runCommand
, writeText
, dockerTools
, busybox
, docker-distribution
, skopeo
, curl
, python3
, k3s
, sparkgap
}:

let
  arch = {
    x86_64-linux = "amd64";
    aarch64-linux = "arm64";
  }.${stdenv.hostPlatform.system};

  registryPort = 5000;
  httpPort = 8088;
  registry = "127.0.0.1:${toString registryPort}";

  # Both images hold busybox as their own layer (buildLayeredImage: one layer per store path),
  # so the lock lists that layer twice and the bundle must carry it once.
  shell = dockerTools.buildLayeredImage {
    name = "sparkgap-test/shell";
    tag = "1";
    contents = [ busybox ];
    config.Cmd = [ "/bin/sh" ];
  };
  sleeper = dockerTools.buildLayeredImage {
    name = "sparkgap-test/sleeper";
    tag = "1";
    contents = [ busybox ];
    config.Cmd = [ "/bin/sleep" "3600" ];
  };

  spec = writeText "appliance.yaml" ''
    apiVersion: sparkgap.dev/v1alpha1
    kind: Appliance
    metadata:
      name: vm-test
    spec:
      platform: linux/${arch}
      k3s:
        version: v${k3s.version}
        binaryUrl: http://127.0.0.1:${toString httpPort}/k3s
        # No image in the VM for these: nothing may pull.
        disable: [traefik, coredns, local-storage, metrics-server]
        metricsServer: false
        nodeName: vm
        nodeLabels:
          sparkgap.dev/appliance: vm-test
        reserved:
          system: { cpu: 100m, memory: 256Mi }
      images:
        - name: shell
          reference: ${registry}/sparkgap-test/shell:1
        - name: sleeper
          reference: ${registry}/sparkgap-test/sleeper:1
      namespaces:
        - name: vm-apps
          labels: { sparkgap.dev/platform: ci }
          podSecurity: baseline
        - name: vm-obs
          labels: { sparkgap.dev/platform: observability }
          podSecurity: restricted
      quotas:
        - namespace: vm-apps
          hard: { requests.cpu: "1", requests.memory: 1Gi, pods: "10" }
          limits:
            default: { cpu: 200m, memory: 128Mi }
            defaultRequest: { cpu: 100m, memory: 64Mi }
      rbac:
        serviceAccounts:
          - { name: runner, namespace: vm-apps }
        roles:
          - name: runner
            namespace: vm-apps
            rules:
              - { apiGroups: [""], resources: [pods], verbs: [get, list, create] }
        bindings:
          - name: runner
            namespace: vm-apps
            role: { kind: Role, name: runner }
            subjects: [{ kind: ServiceAccount, name: runner, namespace: vm-apps }]
        expect:
          - { subject: { kind: ServiceAccount, name: runner, namespace: vm-apps }, verb: create, resource: pods, namespace: vm-apps, allowed: true }
          - { subject: { kind: ServiceAccount, name: runner, namespace: vm-apps }, verb: create, resource: pods, namespace: vm-obs, allowed: false }
      verify:
        timeout: 3m
        testImage: shell
        # The VM has no CoreDNS, local-path provisioner, pause image or GPU: checks that need
        # them are reported as skipped, never faked.
        skip: [system-pods, storage, pod-network, dns, network-policy, registry, metrics, gpu]
        gpu:
          enabled: false
  '';
in
runCommand "sparkgap-vm-test-bundle"
{
  nativeBuildInputs = [ docker-distribution skopeo curl python3 sparkgap ];
  passthru = { inherit spec shell sleeper; };
}
  ''
    set -euo pipefail
    export HOME=$TMPDIR XDG_CACHE_HOME=$TMPDIR/xdg-cache SOURCE_DATE_EPOCH=0
    pids=()
    trap 'kill "''${pids[@]}" 2>/dev/null || true' EXIT

    cat > registry.yml <<YAML
    version: 0.1
    log: { level: warn }
    storage: { filesystem: { rootdirectory: $TMPDIR/registry } }
    http: { addr: ${registry} }
    YAML
    registry serve registry.yml & pids+=($!)

    mkdir -p www
    cp ${k3s}/bin/k3s www/k3s
    python3 -m http.server ${toString httpPort} --bind 127.0.0.1 --directory www \
      2> http.log & pids+=($!)

    for _ in $(seq 1 100); do
      curl -sf http://${registry}/v2/ >/dev/null && curl -sf -o /dev/null -r 0-0 \
        http://127.0.0.1:${toString httpPort}/k3s && break
      sleep 0.1
    done

    for img in shell:${shell} sleeper:${sleeper}; do
      skopeo --insecure-policy copy --quiet --dest-tls-verify=false \
        "docker-archive:''${img#*:}" "docker://${registry}/sparkgap-test/''${img%%:*}:1"
    done

    cp ${spec} appliance.yaml
    sparkgap --no-progress lock -f appliance.yaml -o appliance.lock --insecure-registry ${registry}
    sparkgap --no-progress build -f appliance.yaml --lock appliance.lock -o bundle.tar \
      --cache $TMPDIR/cache --insecure-registry ${registry}

    mkdir -p $out
    mv bundle.tar $out/bundle.tar
    cp appliance.yaml appliance.lock $out/
  ''
