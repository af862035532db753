{
  description = "sparkgap: reproducible airgap k3s bundles for the NVIDIA DGX Spark, built and tested with Nix";

  # Pinned in flake.lock to a nixos-25.11 revision (provenance in docs/nix.md).
  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-25.11";

  outputs = { self, nixpkgs }:
    let
      inherit (nixpkgs) lib;
      systems = [ "x86_64-linux" "aarch64-linux" ];
      forAllSystems = f: lib.genAttrs systems (system: f nixpkgs.legacyPackages.${system});

      # The DGX Spark appliance: spec, lock and the files the spec names. The lock is made by
      # `sparkgap lock` on a connected machine and committed; nix/lock-blobs.nix stops the
      # evaluation with that command when it is missing.
      applianceDir = ./bundle;

      moduleWithPackage = { pkgs, ... }: {
        imports = [ ./nixos/module.nix ];
        services.sparkgap.package =
          lib.mkDefault self.packages.${pkgs.stdenv.hostPlatform.system}.sparkgap;
      };
    in
    {
      packages = forAllSystems (pkgs:
        let
          sparkgap = pkgs.callPackage ./nix/package.nix { };
          # aarch64-linux static (musl) binary, the one a Spark can run whatever its libc.
          staticPkgs =
            if pkgs.stdenv.hostPlatform.isAarch64
            then pkgs.pkgsStatic
            else pkgs.pkgsCross.aarch64-multiplatform.pkgsStatic;
        in
        {
          inherit sparkgap;
          default = sparkgap;
          sparkgap-static = staticPkgs.callPackage ./nix/package.nix { };
          # The DGX Spark bundle (linux/arm64, as the lock says): the same on either build system.
          # Without a committed lock this is a derivation that fails when built, naming the
          # command to run, so `nix flake check` (which only evaluates packages) still works.
          bundle =
            if builtins.pathExists (applianceDir + "/appliance.lock")
            then
              pkgs.callPackage ./nix/bundle.nix
                {
                  inherit sparkgap applianceDir;
                  name = "dgx-spark-bundle";
                }
            else
              pkgs.runCommand "dgx-spark-bundle-needs-lock" { } ''
                echo "bundle/appliance.lock is missing: run 'sparkgap lock -f bundle/appliance.yaml -o bundle/appliance.lock' on a connected machine, then git add it" >&2
                exit 1
              '';
        });

      nixosModules.default = moduleWithPackage;
      nixosModules.sparkgap = moduleWithPackage;

      checks = forAllSystems (pkgs:
        let
          inherit (pkgs.stdenv.hostPlatform) system;
          sparkgap = self.packages.${system}.sparkgap;
          withTests = pkgs.callPackage ./nix/package.nix { withTests = true; };
          crateCheck = name: nativeBuildInputs: script: withTests.overrideAttrs (old: {
            pname = "sparkgap-${name}";
            nativeBuildInputs = old.nativeBuildInputs ++ nativeBuildInputs;
            buildPhase = ''
              runHook preBuild
              export HOME=$TMPDIR
              ${script}
              runHook postBuild
            '';
            installPhase = "touch $out";
            doCheck = false;
            dontFixup = true;
          });
          testBundle = pkgs.callPackage ./nixos/tests/test-bundle.nix { inherit sparkgap; };
          vmArgs = { inherit pkgs sparkgap testBundle; module = ./nixos/module.nix; };
        in
        {
          fmt = crateCheck "fmt" [ pkgs.rustfmt ] "cargo fmt --all -- --check";
          clippy = crateCheck "clippy" [ pkgs.clippy ]
            "cargo clippy --offline --locked --all-targets -- -D warnings";
          # The crate's tests with the tools they start on PATH; a test whose tool is missing
          # prints why it skipped. Debian names the registry binary docker-registry.
          test = crateCheck "test" [ pkgs.docker-distribution pkgs.skopeo pkgs.minisign ] ''
            mkdir -p $TMPDIR/bin
            ln -s ${pkgs.docker-distribution}/bin/registry $TMPDIR/bin/docker-registry
            export PATH=$TMPDIR/bin:$PATH
            cargo test --offline --locked --all-targets
          '';
          vm-install = import ./nixos/tests/install.nix vmArgs;
          vm-apply-verify = import ./nixos/tests/apply-verify.nix vmArgs;
          vm-idempotent = import ./nixos/tests/idempotent.nix vmArgs;
          vm-test-bundle = testBundle;
        });

      devShells = forAllSystems (pkgs: {
        default = pkgs.mkShell {
          packages = with pkgs; [
            cargo
            rustc
            rustfmt
            clippy
            rust-analyzer
            skopeo
            docker-distribution
            minisign
            jq
            nixpkgs-fmt
            deadnix
          ];
        };
      });

      formatter = forAllSystems (pkgs: pkgs.nixpkgs-fmt);
    };
}
