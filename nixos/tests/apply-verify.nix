# (2) Apply and verify: sparkgap.service runs install, apply and verify; it only succeeds when
# every verification check passed (or was skipped by the spec with a reason), and the applied
# objects are there.
{ pkgs, module, sparkgap, testBundle }:
pkgs.testers.runNixOSTest {
  name = "sparkgap-apply-verify";
  nodes.machine = import ./node.nix {
    inherit module sparkgap testBundle;
    runApply = true;
    runVerify = true;
  };
  testScript = ''
    import json

    machine.wait_for_unit("sparkgap.service", timeout=900)
    kubectl = "/usr/local/bin/k3s kubectl "

    ns = json.loads(machine.succeed(kubectl + "get namespace vm-apps -o json"))
    assert ns["metadata"]["labels"]["sparkgap.dev/platform"] == "ci", ns["metadata"]
    assert ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "baseline", ns["metadata"]
    machine.succeed(kubectl + "-n vm-apps get resourcequota,limitrange,serviceaccount/runner,role/runner,rolebinding/runner")
    machine.succeed(kubectl + "auth can-i create pods -n vm-apps --as system:serviceaccount:vm-apps:runner")
    machine.fail(kubectl + "auth can-i create pods -n vm-obs --as system:serviceaccount:vm-apps:runner")

    # The report again, as a script reads it: one JSON document, and exit 0 (1 = a check failed).
    report = machine.succeed(
        "sparkgap verify --output json -f /run/sparkgap/appliance.yaml --kubeconfig /etc/rancher/k3s/k3s.yaml"
    )
    print(json.dumps(json.loads(report), indent=2))
  '';
}
