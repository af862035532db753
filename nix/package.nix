# The sparkgap tool, built from Cargo.lock. Tests are off here: most of them start a registry
# and other tools; `checks.<system>.test` runs them with those tools on PATH.
{ lib, rustPlatform, withTests ? false }:

let
  fs = lib.fileset;
  root = ../.;
  cargo = lib.importTOML ../Cargo.toml;
in
rustPlatform.buildRustPackage {
  pname = cargo.package.name;
  inherit (cargo.package) version;

  # Only what cargo reads: editing docs, Nix files or the appliance does not rebuild the tool.
  src = fs.toSource {
    inherit root;
    fileset = fs.unions ([
      ../Cargo.toml
      ../Cargo.lock
      ../src
      (fs.maybeMissing ../build.rs)
      (fs.maybeMissing ../benches)
    ] ++ lib.optionals withTests [
      ../tests
      ../bundle
      ../nix
      ../nixos
      ../flake.nix
    ]);
  };

  cargoLock.lockFile = ../Cargo.lock;

  doCheck = false;

  meta = {
    description = cargo.package.description;
    license = lib.licenses.asl20;
    mainProgram = "sparkgap";
    platforms = lib.platforms.linux;
  };
}
