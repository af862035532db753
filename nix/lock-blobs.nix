# The blobs a sparkgap lock (`appliance.lock`, written by `sparkgap lock`) needs, one entry per
# distinct digest, sorted by digest: exactly `Lock::all_blobs()` of src/lock.rs. The flake
# fetches each entry as its own fixed-output derivation (nix/fetch-blob.nix for registry blobs,
# fetchurl for the k3s binary and chart archives).
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
#   kind        "manifest" | "config" | "layer" | "k3s" | "chart"
#   registry    the registry host as written in the reference ("docker.io" for Docker Hub
#               names); null for the k3s binary and chart archives
#   repository  the repository path ("library/busybox"); null for the k3s binary and charts
#   url         the k3s or chart archive download URL; null for registry blobs
# A blob shared by several images is listed once, under the first image (by name) holding it;
# images come before the k3s binary, which comes before chart archives (charts by name, each
# chart's own archive before its dependencies'), as in `Lock::all_blobs()`.
# Chart archives are those of charts from a repository (`charts[].url`) and every dependency
# the lock pins (`charts[].dependencies[]`); a local chart (`path`, no `url`) is in the source
# tree, not fetched, so it is not listed.
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
    if lockVersion != 3
    then fail "lock version ${toJSON lockVersion} is not supported (this flake reads version 3)"
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

  # `Lock::all_blobs()` lists chart archives under this media type (CHART_MEDIA_TYPE).
  chartMediaType = "application/vnd.cncf.helm.chart.content.v1.tar+gzip";

  chartEntry = label: a: url: {
    digest = checkDigest "${label}.digest" (a.digest or null);
    hex = hexOf a.digest;
    size = checkSize label (a.size or null);
    mediaType = chartMediaType;
    kind = "chart";
    registry = null;
    repository = null;
    inherit url;
  };

  # What `ChartLock::downloads()` gives: the archive when it has a url, then every dependency.
  chartBlobs = c:
    let
      label = "charts[${c.name or "?"}]";
      url = c.url or null;
      deps = c.dependencies or [ ];
      dep = i:
        let
          d = builtins.elemAt deps i;
          dLabel = "${label}.dependencies[${toString i}]";
        in
        chartEntry dLabel d (d.url or (fail "${dLabel}: no url"));
    in
    (if url == null then [ ] else [ (chartEntry label c url) ])
    ++ builtins.genList dep (length deps);

  charts = builtins.sort (a: b: (a.name or "") < (b.name or "")) (checked.charts or [ ]);

  # Images in name order (as the tool writes them), so "first image holding a shared blob" is
  # the same whatever order the file lists them in.
  images = builtins.sort (a: b: (a.name or "") < (b.name or "")) (checked.images or [ ]);

  all' = builtins.concatMap imageBlobs images ++ [ k3sBlob ] ++ builtins.concatMap chartBlobs charts;

  # listToAttrs keeps the first of duplicate names; attrValues returns them sorted by name,
  # i.e. by digest: deduplicated and sorted in one step.
  byDigest = listToAttrs (map (b: { name = b.digest; value = b; }) all');
in
assert all (b: b.size >= 0) all';
attrValues byDigest
