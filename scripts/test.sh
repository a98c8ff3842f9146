#!/usr/bin/env bash
# Runs every PEC test, as README.md and .ci/run say. On a fresh Debian machine with Go it
# first installs, with apt, the independent tools the tests use: SoftHSM2 (the PKCS#11 module),
# OpenSSL (the RFC 3161 and CMS verifier), OpenSC (pkcs11-tool).
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
[ -e /usr/lib/softhsm/libsofthsm2.so ] || need+=(softhsm2)
command -v softhsm2-util >/dev/null || need+=(softhsm2)
command -v openssl >/dev/null || need+=(openssl)
command -v pkcs11-tool >/dev/null || need+=(opensc)
if [ ${#need[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  echo "== installing with apt: ${need[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

echo "== gofmt"
unformatted=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))
if [ -n "$unformatted" ]; then
  echo "gofmt would change:"; echo "$unformatted"; exit 1
fi

echo "== go vet"
go vet ./...

# The concurrent packages run under the race detector; the rest plainly.
race_pkgs=(./hsm/... ./tsa/... ./gateway/...)
echo "== go test -race ${race_pkgs[*]}"
go test -race -count=1 "${race_pkgs[@]}"

others=$(go list ./... | grep -v -E '^pec/(hsm|tsa|gateway)(/|$)')
echo "== go test (the other packages)"
go test -count=1 $others
