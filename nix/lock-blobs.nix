# The blobs a sparkgap lock (`appliance.lock`, written by `sparkgap lock`) needs, one entry per
# distinct digest, sorted by digest: exactly `Lock::all_blobs()` of src/lock.rs. The flake
# fetches each entry as its own fixed-output derivation (nix/fetch-blob.nix, fetchurl for k3s).
#
# Deliberately free of nixpkgs (builtins only) so that tests/nix.rs can evaluate it with a bare
# `nix-instantiate --eval --strict --json` on a machine without a Nix store.
#
# Arguments:
#   lock         the lock: a path (or absolute path string) to the JSON file, or the parsed attrset
#   lockName     how errors name the lock (default: its path)
#   lockCommand  the command that makes the lock, named in the error when the file is absent
#
# Each entry: { digest, hex, size, kind, mediaType, registry, repository, url }
#   kind        "manifest" | "config" | "layer" | "k3s"
#   registry    the registry host as written in the reference ("docker.io" for Docker Hub
#               names); null for the k3s binary
#   repository  the repository path ("library/busybox"); null for the k3s binary
#   url         the k3s download URL; null for registry blobs
# A blob shared by several images is listed once, under the first image (by name) holding it.
{ lock
, lockName ? null
, lockCommand ? "sparkgap lock -f bundle/appliance.yaml -o bundle/appliance.lock"
}:
let
  inherit (builtins) all concatStringsSep filter head isAttrs length listToAttrs attrValues
    match pathExists readFile fromJSON split tail toJSON;

  name =
    if lockName != null then lockName
    else if isAttrs lock then "the lock"
    else toString lock;

  fail = msg: throw "${name}: ${msg}";

  parsed =
    if isAttrs lock then lock
    else if pathExists lock then fromJSON (readFile lock)
    else
      throw ''
        ${name} does not exist, so the bundle's blobs are unknown.
        Make it on a machine that reaches the registries, then commit it (flakes only see
        files tracked by git):
          ${lockCommand}
          git add ${name}''; # never guess digests: a fixed-output fetch needs the real one

  lockVersion = parsed.lockVersion or (fail "no lockVersion: not a sparkgap lock");

  checked =
    if lockVersion != 2
    then fail "lock version ${toJSON lockVersion} is not supported (this flake reads version 2)"
    else parsed;

  checkDigest = field: d:
    if builtins.isString d && match "sha256:[0-9a-f]{64}" d != null then d
    else fail "${field}: ${toJSON d} is not a sha256 digest";

  checkSize = field: s:
    if builtins.isInt s && s >= 0 then s
    else fail "${field}: size ${toJSON s} is not a byte count";

  hexOf = d: builtins.substring 7 64 d;

  # Docker's reference grammar, as far as fetching needs it: [registry/]path[:tag][@digest].
  # The first component is a registry when it has a '.' or ':' or is "localhost"; Docker Hub
  # names without a namespace live under "library/".
  parseReference = ref:
    let
      noDigest = head (split "@" ref);
      parts = filter builtins.isString (split "/" noDigest);
      first = head parts;
      hasRegistry = length parts > 1
        && (match ".*[.:].*" first != null || first == "localhost");
      registry0 = if hasRegistry then first else "docker.io";
      registry = if registry0 == "index.docker.io" then "docker.io" else registry0;
      path = concatStringsSep "/" (if hasRegistry then tail parts else parts);
      pathNoTag = head (match "([^:]+)(:[^:]*)?" path);
      repository =
        if registry == "docker.io" && match ".*/.*" pathNoTag == null
        then "library/${pathNoTag}"
        else pathNoTag;
    in
    if match "[^:]+(:[^:/]*)?" path == null || pathNoTag == ""
    then fail "image reference ${toJSON ref} cannot be parsed"
    else { inherit registry repository; };

  imageBlobs = img:
    let
      label = "images[${img.name or "?"}]";
      ref = parseReference (img.reference or (fail "${label}: no reference"));
      entry = kind: field: d: {
        digest = checkDigest "${label}.${field}.digest" (d.digest or null);
        hex = hexOf d.digest;
        size = checkSize "${label}.${field}" (d.size or null);
        mediaType = d.mediaType or (fail "${label}.${field}: no mediaType");
        inherit kind;
        inherit (ref) registry repository;
        url = null;
      };
      layers = img.layers or (fail "${label}: no layers");
    in
    [ (entry "manifest" "manifest" (img.manifest or (fail "${label}: no manifest"))) ]
    ++ [ (entry "config" "config" (img.config or (fail "${label}: no config"))) ]
    ++ builtins.genList (i: entry "layer" "layers[${toString i}]" (builtins.elemAt layers i))
      (length layers);

  k3s = checked.k3s or (fail "no k3s section");

  k3sBlob = {
    digest = checkDigest "k3s.digest" (k3s.digest or null);
    hex = hexOf k3s.digest;
    size = checkSize "k3s" (k3s.size or null);
    mediaType = "application/octet-stream";
    kind = "k3s";
    registry = null;
    repository = null;
    url = k3s.url or (fail "k3s: no url");
  };

  # Images in name order (as the tool writes them), so "first image holding a shared blob" is
  # the same whatever order the file lists them in.
  images = builtins.sort (a: b: (a.name or "") < (b.name or "")) (checked.images or [ ]);

  all' = builtins.concatMap imageBlobs images ++ [ k3sBlob ];

  # listToAttrs keeps the first of duplicate names; attrValues returns them sorted by name,
  # i.e. by digest: deduplicated and sorted in one step.
  byDigest = listToAttrs (map (b: { name = b.digest; value = b; }) all');
in
assert all (b: b.size >= 0) all';
attrValues byDigest
