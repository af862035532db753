# The VM every sparkgap NixOS test boots: the module, the test bundle, room for k3s.
{ module, sparkgap, testBundle, runApply, runVerify }:
{ pkgs, ... }:
{
  imports = [ module ];

  services.sparkgap = {
    enable = true;
    package = sparkgap;
    bundle = "${testBundle}/bundle.tar";
    inherit runApply runVerify;
    waitSeconds = 300;
  };

  environment.systemPackages = [ pkgs.jq ];

  virtualisation = {
    memorySize = 3072;
    diskSize = 4096;
    cores = 2;
  };
}
