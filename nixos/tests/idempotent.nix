# (3) A second `sparkgap up` (sparkgap.service run again with the same bundle) changes nothing:
# no file k3s reads is rewritten, k3s is not restarted, and no applied object changes.
{ pkgs, module, sparkgap, testBundle }:
pkgs.testers.runNixOSTest {
  name = "sparkgap-idempotent";
  nodes.machine = import ./node.nix {
    inherit module sparkgap testBundle;
    runApply = true;
    runVerify = true;
  };
  testScript = ''
    machine.wait_for_unit("sparkgap.service", timeout=900)

    files = (
        "stat -c '%n %s %Y %i' /usr/local/bin/k3s /etc/rancher/k3s/config.yaml "
        "/etc/rancher/k3s/registries.yaml /var/lib/rancher/k3s/agent/images/* "
        "/var/lib/sparkgap/installed.json | sort"
    )
    k3s_pid = "systemctl show -p MainPID --value k3s.service"
    objects = (
        "/usr/local/bin/k3s kubectl get namespaces,resourcequotas,limitranges,serviceaccounts,"
        "roles,rolebindings,clusterroles,clusterrolebindings,storageclasses,networkpolicies "
        "-A -l app.kubernetes.io/managed-by=sparkgap "
        "-o jsonpath='{range .items[*]}{.kind}/{.metadata.namespace}/{.metadata.name} "
        "{.metadata.resourceVersion}{\"\\n\"}{end}' | sort"
    )

    before = (machine.succeed(files), machine.succeed(k3s_pid), machine.succeed(objects))
    assert before[2].strip(), "apply labelled no object as managed by sparkgap"

    machine.succeed("systemctl restart sparkgap.service")
    machine.wait_for_unit("sparkgap.service")
    machine.succeed("journalctl -b -u sparkgap.service | grep -q 'k3s files unchanged'")

    after = (machine.succeed(files), machine.succeed(k3s_pid), machine.succeed(objects))
    assert before[0] == after[0], f"installed files changed:\n{before[0]}\n---\n{after[0]}"
    assert before[1] == after[1], f"k3s restarted: pid {before[1]} -> {after[1]}"
    assert before[2] == after[2], f"applied objects changed:\n{before[2]}\n---\n{after[2]}"
  '';
}
