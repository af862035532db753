# services.sparkgap: bring a NixOS host up from a sparkgap bundle, offline.
#
# One oneshot unit, sparkgap.service, does what `sparkgap up` does on other distributions:
# `sparkgap install --no-start` (k3s binary, /etc/rancher/k3s, images), (re)starts k3s only when
# a file k3s reads changed, waits for the node, then `sparkgap apply` and `sparkgap verify`
# (each optional). k3s itself runs as k3s.service, declared here the NixOS way, because NixOS
# owns /etc/systemd/system (a read-only link into the store): the unit file `sparkgap install`
# writes there is captured in /var/lib/sparkgap/units through a bind mount private to
# sparkgap.service, and its env file is read from there.
#
# This replaces services.k3s: both would manage the k3s binary, /etc/rancher/k3s and
# k3s.service, so enabling both is an error (see docs/nix.md for which to choose).
{ config, lib, pkgs, ... }:

let
  cfg = config.services.sparkgap;
  unitsDir = "/var/lib/sparkgap/units";
  k3sBin = "/usr/local/bin/k3s";
  args = lib.escapeShellArgs;
  specPath = if cfg.spec != null then toString cfg.spec else "/run/sparkgap/appliance.yaml";

  upScript = pkgs.writeShellScript "sparkgap-up" ''
    set -euo pipefail
    export PATH=${lib.makeBinPath [ cfg.package pkgs.coreutils pkgs.gnutar pkgs.systemd ]}:$PATH

    # What k3s reads at start: a change to any of these needs a k3s restart, nothing else does.
    stamp() {
      stat -c '%n %s %Y %i' ${k3sBin} /etc/rancher/k3s/config.yaml \
        /etc/rancher/k3s/registries.yaml /var/lib/rancher/k3s/agent/images/* \
        ${unitsDir}/k3s.service.env 2>/dev/null | sort || true
    }

    before=$(stamp)
    sparkgap install --no-start ${args cfg.extraInstallFlags} ${args [ (toString cfg.bundle) ]}
    after=$(stamp)

    if ! systemctl is-active --quiet k3s.service; then
      echo "sparkgap: starting k3s"
      systemctl start k3s.service
    elif [ "$before" != "$after" ]; then
      echo "sparkgap: files k3s reads changed; restarting k3s"
      systemctl restart k3s.service
    else
      echo "sparkgap: k3s files unchanged; k3s keeps running"
    fi

    ${lib.optionalString (cfg.spec == null) ''
      # The spec the bundle carries (the bundle is a plain tar; appliance.yaml is a member).
      tar -xOf ${args [ (toString cfg.bundle) ]} appliance.yaml > ${specPath}.tmp
      mv ${specPath}.tmp ${specPath}
    ''}

    ${lib.optionalString (cfg.runApply || cfg.runVerify) ''
      echo "sparkgap: waiting for the API and the node (at most ${toString cfg.waitSeconds}s)"
      deadline=$(( $(date +%s) + ${toString cfg.waitSeconds} ))
      until ${k3sBin} kubectl get --raw /readyz >/dev/null 2>&1; do
        if [ "$(date +%s)" -ge "$deadline" ]; then
          echo "sparkgap: the API did not answer within ${toString cfg.waitSeconds}s" >&2
          exit 3
        fi
        sleep 2
      done
      remaining=$(( deadline - $(date +%s) ))
      [ "$remaining" -gt 0 ] || remaining=1
      ${k3sBin} kubectl wait --for=condition=Ready node --all --timeout="$remaining"s
    ''}
    ${lib.optionalString cfg.runApply ''
      sparkgap apply -f ${specPath} --kubeconfig /etc/rancher/k3s/k3s.yaml ${args cfg.extraApplyFlags}
    ''}
    ${lib.optionalString cfg.runVerify ''
      sparkgap verify -f ${specPath} --kubeconfig /etc/rancher/k3s/k3s.yaml ${args cfg.extraVerifyFlags}
    ''}
  '';
in
{
  options.services.sparkgap = {
    enable = lib.mkEnableOption "k3s brought up offline from a sparkgap airgap bundle";

    package = lib.mkOption {
      type = lib.types.package;
      description = "The sparkgap tool (the flake's module sets its own `packages.sparkgap`).";
    };

    bundle = lib.mkOption {
      type = lib.types.path;
      example = lib.literalExpression ''"''${inputs.spark.packages.aarch64-linux.bundle}/bundle.tar"'';
      description = ''
        The bundle tar to install (`sparkgap build` output, or `packages.bundle`'s
        `bundle.tar`). Its integrity is checked by `sparkgap install` before anything is placed.
      '';
    };

    spec = lib.mkOption {
      type = lib.types.nullOr lib.types.path;
      default = null;
      description = ''
        The appliance spec `apply` and `verify` read. Null: the spec carried inside the bundle,
        which is the one the bundle was built from.
      '';
    };

    runApply = lib.mkOption {
      type = lib.types.bool;
      default = true;
      description = "Run `sparkgap apply` (namespace, storage, network, registry, quota, rbac) once k3s is Ready.";
    };

    runVerify = lib.mkOption {
      type = lib.types.bool;
      default = true;
      description = "Run `sparkgap verify` after apply; a failed check fails sparkgap.service.";
    };

    waitSeconds = lib.mkOption {
      type = lib.types.ints.positive;
      default = 600;
      description = "How long apply and verify wait for the API and the node to be Ready.";
    };

    extraInstallFlags = lib.mkOption {
      type = lib.types.listOf lib.types.str;
      default = [ ];
      example = [ "--pubkey" "/etc/sparkgap/sparkgap.pub" ];
      description = "Extra arguments to `sparkgap install`.";
    };

    extraApplyFlags = lib.mkOption {
      type = lib.types.listOf lib.types.str;
      default = [ ];
      description = "Extra arguments to `sparkgap apply`.";
    };

    extraVerifyFlags = lib.mkOption {
      type = lib.types.listOf lib.types.str;
      default = [ ];
      example = [ "--output" "json" ];
      description = "Extra arguments to `sparkgap verify`.";
    };

    openFirewall = lib.mkOption {
      type = lib.types.bool;
      default = true;
      description = "Open the API port (6443/tcp) and trust the pod network interfaces.";
    };
  };

  config = lib.mkIf cfg.enable {
    assertions = [
      {
        assertion = !(config.services.k3s.enable or false);
        message = ''
          services.sparkgap and services.k3s both manage k3s (its binary, /etc/rancher/k3s and
          k3s.service). Enable one: services.sparkgap installs the k3s and images from the
          bundle offline; services.k3s runs nixpkgs' k3s.
        '';
      }
    ];

    environment.systemPackages = [ cfg.package ];

    boot.kernelModules = [ "overlay" "br_netfilter" ];
    boot.kernel.sysctl = {
      "net.ipv4.ip_forward" = 1;
      "net.bridge.bridge-nf-call-iptables" = 1;
    };

    networking.firewall = lib.mkIf cfg.openFirewall {
      allowedTCPPorts = [ 6443 ];
      trustedInterfaces = [ "cni0" "flannel.1" ];
    };

    systemd.tmpfiles.rules = [ "d ${unitsDir} 0755 root root -" ];

    systemd.services.sparkgap = {
      description = "Bring k3s up from the sparkgap bundle (install, apply, verify)";
      wantedBy = [ "multi-user.target" ];
      wants = [ "network-online.target" ];
      after = [ "network-online.target" "systemd-tmpfiles-setup.service" ];
      restartTriggers = [ cfg.bundle ];
      serviceConfig = {
        Type = "oneshot";
        RemainAfterExit = true;
        ExecStart = upScript;
        RuntimeDirectory = "sparkgap";
        RuntimeDirectoryPreserve = true;
        # See the top of this file: the k3s unit `sparkgap install` writes lands in unitsDir.
        BindPaths = [ "${unitsDir}:/etc/systemd/system" ];
        TimeoutStartSec = cfg.waitSeconds + 900;
      };
    };

    # The unit k3s's own installer writes, started by sparkgap.service (not at boot by itself:
    # it must never start before the bundle's binary and config are in place).
    systemd.services.k3s = {
      description = "k3s from the sparkgap bundle";
      documentation = [ "https://docs.k3s.io" ];
      wants = [ "network-online.target" ];
      after = [ "network-online.target" ];
      path = with pkgs; [ kmod util-linux iptables iproute2 ethtool socat conntrack-tools ];
      unitConfig.ConditionPathExists = k3sBin;
      serviceConfig = {
        Type = "notify";
        EnvironmentFile = "-${unitsDir}/k3s.service.env";
        KillMode = "process";
        Delegate = "yes";
        LimitNOFILE = 1048576;
        LimitNPROC = "infinity";
        LimitCORE = "infinity";
        TasksMax = "infinity";
        TimeoutStartSec = 0;
        Restart = "always";
        RestartSec = "5s";
        ExecStartPre = [ "-${pkgs.kmod}/bin/modprobe br_netfilter" "-${pkgs.kmod}/bin/modprobe overlay" ];
        ExecStart = "${k3sBin} server";
      };
    };
  };
}
