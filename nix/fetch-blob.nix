# One registry blob (manifest, config or layer) as a fixed-output derivation whose hash is the
# blob's own digest: Nix fetches it once, by digest, and any substituter or local store that
# already has it never downloads it again.
#
# Like nixpkgs' fetchdocker (pkgs/build-support/docker/fetchdocker*), it speaks the registry
# HTTP API directly rather than through skopeo: GET /v2/<repository>/blobs/<digest> (or
# /manifests/<digest> with an Accept header naming the manifest's media type), and on
# `401 WWW-Authenticate: Bearer realm=...,service=...,scope=...` it asks the realm for an
# anonymous pull token and retries with it. Redirects (Docker Hub sends blobs to a CDN) are
# followed; curl drops the Authorization header when a redirect leaves the registry's host.
{ lib, stdenvNoCC, curl, jq, cacert }:

{ digest
, hex ? lib.removePrefix "sha256:" digest
, kind
, registry
, repository
, mediaType ? null
, size ? null
, scheme ? "https"
, ...
}:

let
  # Docker Hub names resolve to this API endpoint (as in `docker pull`).
  host = if registry == "docker.io" then "registry-1.docker.io" else registry;
  what = if kind == "manifest" then "manifests" else "blobs";
  manifestTypes = [
    "application/vnd.oci.image.manifest.v1+json"
    "application/vnd.docker.distribution.manifest.v2+json"
    "application/vnd.oci.image.index.v1+json"
    "application/vnd.docker.distribution.manifest.list.v2+json"
  ];
  accept =
    if kind == "manifest"
    then lib.concatStringsSep ", " (lib.unique (lib.optional (mediaType != null) mediaType ++ manifestTypes))
    else "*/*";
in
assert lib.assertMsg (builtins.match "[0-9a-f]{64}" hex != null)
  "fetch-blob: ${digest} is not a sha256 digest";
assert lib.assertMsg (builtins.elem kind [ "manifest" "config" "layer" ])
  "fetch-blob: ${digest}: kind ${kind} is not a registry blob";
stdenvNoCC.mkDerivation {
  name = "sparkgap-blob-${hex}";
  nativeBuildInputs = [ curl jq ];

  outputHashMode = "flat";
  outputHashAlgo = "sha256";
  outputHash = hex;

  url = "${scheme}://${host}/v2/${repository}/${what}/${digest}";
  inherit accept digest repository;
  expectedSize = if size == null then "" else toString size;
  SSL_CERT_FILE = "${cacert}/etc/ssl/certs/ca-bundle.crt";
  impureEnvVars = lib.fetchers.proxyImpureEnvVars;
  preferLocalBuild = true;

  buildCommand = ''
    set -euo pipefail
    get() { # get OUT [extra curl args]...: prints the final HTTP status
      local out=$1; shift
      curl --silent --show-error --location --retry 3 --connect-timeout 30 \
        --header "Accept: $accept" --dump-header headers --output "$out" \
        --write-out '%{http_code}' "$@" "$url"
    }

    code=$(get "$out") || code=000
    if [ "$code" = 401 ]; then
      challenge=$(tr -d '\r' < headers | grep -i '^www-authenticate: *bearer' | tail -n 1 || true)
      field() { printf '%s' "$challenge" | sed -n "s/.*$1=\"\([^\"]*\)\".*/\1/p"; }
      realm=$(field realm); service=$(field service); scope=$(field scope)
      if [ -z "$realm" ]; then
        echo "fetch-blob: $url answered 401 without a Bearer challenge; the registry needs credentials, which this anonymous fetcher does not have" >&2
        exit 1
      fi
      [ -n "$scope" ] || scope="repository:$repository:pull"
      token=$(curl --fail --silent --show-error --location --retry 3 --get \
          --data-urlencode "service=$service" --data-urlencode "scope=$scope" "$realm" \
        | jq -r '.token // .access_token // empty') || token=
      if [ -z "$token" ]; then
        echo "fetch-blob: $realm gave no anonymous token for $scope" >&2
        exit 1
      fi
      code=$(get "$out" --header "Authorization: Bearer $token") || code=000
    fi
    if [ "$code" != 200 ]; then
      echo "fetch-blob: $url answered HTTP $code for $digest" >&2
      exit 1
    fi
    if [ -n "$expectedSize" ]; then
      got=$(stat -c %s "$out")
      if [ "$got" != "$expectedSize" ]; then
        echo "fetch-blob: $digest from $url is $got bytes, the lock says $expectedSize" >&2
        exit 1
      fi
    fi
  '';

  passthru = { inherit digest kind registry repository; };
}
