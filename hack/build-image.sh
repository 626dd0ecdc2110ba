#!/usr/bin/env bash
# Builds the operator's image with the local Docker engine and tags it (default
# localhost/dbmigrate:dev, the name the chart's local values, the kind e2e and the demo use).
#
#   hack/build-image.sh [TAG [DOCKER-BUILD-OPTIONS...]]     e.g. hack/build-image.sh my/tag --no-cache
#
# FROM the official python base, or, where no registry is reachable, the stand-in that
# hack/lib/python-base-image.sh builds from Debian packages. The system CA bundle goes in as the
# optional `ca-bundle` build secret so that pip trusts a TLS-inspecting proxy (not in any layer).
set -euo pipefail
cd "$(dirname "$0")/.."

TAG=${1:-localhost/dbmigrate:dev}
shift || true
"${DOCKER:-docker}" info >/dev/null 2>&1 || { echo "build-image: no Docker engine answers (docker info)" >&2; exit 1; }
base=$(hack/lib/python-base-image.sh)
version=$(sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml | head -1)
revision=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
secret=()
for bundle in /etc/ssl/certs/ca-certificates.crt /etc/pki/tls/certs/ca-bundle.crt; do
  if [ -s "$bundle" ]; then secret=(--secret "id=ca-bundle,src=$bundle"); break; fi
done
# --network host: the build stage downloads wheels the way this machine reaches PyPI.
DOCKER_BUILDKIT=1 "${DOCKER:-docker}" build --network host \
  --build-arg "BASE_IMAGE=$base" \
  --build-arg "VERSION=$version" \
  --build-arg "REVISION=$revision" \
  --build-arg "CREATED=$(date -u +%Y-%m-%dT%H:%M:%SZ)" \
  "${secret[@]}" "$@" -t "$TAG" . >&2
echo "$TAG"
