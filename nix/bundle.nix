# The airgap bundle from a committed lock: every blob of the lock is its own fixed-output
# derivation (registry blobs through ./fetch-blob.nix, the k3s binary and the chart archives of
# charts from a repository, with their dependencies, through fetchurl; each hashed by its
# digest), linked into a blob cache laid out as `cache/sha256/<hex>` (src/oci/cache.rs),
# and one ordinary derivation runs `sparkgap build --offline` over that cache. The tool writes
# the same bytes for the same lock wherever it runs, so `result/bundle.tar` equals what
# `sparkgap build` writes on a connected machine (docs/nix.md says how to check).
{ lib
, runCommand
, fetchurl
, callPackage
, sparkgap
, applianceDir            # a directory holding the spec, its lock and any files the spec names
, spec ? "appliance.yaml" # the spec, relative to applianceDir
, lock ? "appliance.lock" # the lock, relative to applianceDir
, lockName ? "bundle/appliance.lock" # how errors name the lock
, lockCommand ? "sparkgap lock -f bundle/appliance.yaml -o bundle/appliance.lock"
, name ? "sparkgap-bundle"
, sourceDateEpoch ? 0     # what `sparkgap build` uses when SOURCE_DATE_EPOCH is unset
}:

let
  fetchBlob = callPackage ./fetch-blob.nix { };

  blobs = import ./lock-blobs.nix { lock = applianceDir + "/${lock}"; inherit lockName lockCommand; };

  # Chart archives are named by digest, not by their URL's last component: a repository's
  # index may give URLs whose tail is no valid store name (a query string), and an archive whose
  # URL changes (its repository moved) stays the same store path.
  fetchOne = b:
    if b.kind == "k3s"
    then fetchurl { inherit (b) url; sha256 = b.hex; }
    else if b.kind == "chart"
    then fetchurl { inherit (b) url; sha256 = b.hex; name = "sparkgap-chart-${b.hex}.tgz"; }
    else fetchBlob b;

  cache = lib.concatMapStrings (b: "ln -s ${fetchOne b} cache/sha256/${b.hex}\n") blobs;
in
runCommand name
{
  nativeBuildInputs = [ sparkgap ];
  passthru = { inherit blobs; blobCount = builtins.length blobs; };
}
  ''
    mkdir -p cache/sha256
    ${cache}
    # stdenv exports its own SOURCE_DATE_EPOCH (1980); the tool's default is 0, and the bundle
    # must match the one built without Nix.
    export SOURCE_DATE_EPOCH=${toString sourceDateEpoch}
    export HOME=$TMPDIR XDG_CACHE_HOME=$TMPDIR/xdg-cache
    sparkgap build --no-progress --offline --cache cache \
      -f ${applianceDir}/${spec} --lock ${applianceDir}/${lock} -o bundle.tar
    mkdir -p $out
    mv bundle.tar $out/bundle.tar
    cp ${applianceDir}/${lock} $out/appliance.lock
  ''
