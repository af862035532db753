# (1) Install: the bundle is installed offline, k3s starts from the bundle's binary and config,
# and every image of the lock is imported into k3s's containerd under its reference.
{ pkgs, module, sparkgap, testBundle }:
pkgs.testers.runNixOSTest {
  name = "sparkgap-install";
  nodes.machine = import ./node.nix {
    inherit module sparkgap testBundle;
    runApply = false;
    runVerify = false;
  };
  testScript = ''
    import json

    machine.wait_for_unit("sparkgap.service")
    machine.wait_for_unit("k3s.service")
    machine.succeed("test -x /usr/local/bin/k3s")
    machine.succeed("cmp /usr/local/bin/k3s <(tar -xOf ${testBundle}/bundle.tar bin/k3s)")
    machine.succeed("test -s /etc/rancher/k3s/config.yaml")
    machine.wait_until_succeeds(
        "/usr/local/bin/k3s kubectl get node vm "
        "-o jsonpath='{.status.conditions[?(@.type==\"Ready\")].status}' | grep -qx True",
        timeout=300,
    )

    lock = json.loads(machine.succeed("cat ${testBundle}/appliance.lock"))
    wanted = {(i["imageName"], i["manifest"]["digest"]) for i in lock["images"]}
    assert len(wanted) == 2, wanted

    def imported(_):
        listed = machine.succeed("/usr/local/bin/k3s ctr images ls")
        return all(name in listed and digest in listed for name, digest in wanted)

    retry(imported, timeout_seconds=120)
    print(machine.succeed("/usr/local/bin/k3s ctr images ls"))
  '';
}
