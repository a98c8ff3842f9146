#!/usr/bin/env bash
# Runs every PEC test, as README.md and .ci/run say. On a fresh Debian machine with Go it
# first installs, with apt, the independent tools the tests use: SoftHSM2 (the PKCS#11 module),
# OpenSSL (the RFC 3161 and CMS verifier), OpenSC (pkcs11-tool), poppler-utils (pdfsig, the PDF
# signature verifier).
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
[ -e /usr/lib/softhsm/libsofthsm2.so ] || need+=(softhsm2)
command -v softhsm2-util >/dev/null || need+=(softhsm2)
command -v openssl >/dev/null || need+=(openssl)
command -v pkcs11-tool >/dev/null || need+=(opensc)
command -v pdfsig >/dev/null || need+=(poppler-utils)  # signing, cmd/pec/testdata/sign.txtar: the PDF signature verifier
command -v certutil >/dev/null || need+=(libnss3-tools)  # certutil: the NSS database trusting the test root, for pdfsig
command -v unzip >/dev/null || need+=(unzip)  # cmd/pec/testdata/proof.txtar opens a proof bundle
command -v curl >/dev/null || need+=(curl)    # and reads one over mutual TLS
command -v strace >/dev/null || need+=(strace)  # proof: the order of pwrite64, fdatasync and acknowledgment of a real run
# proof's PostgreSQL store: its tests start a throw-away cluster (initdb, pg_ctl) unless
# PEC_TEST_POSTGRES_URL names a database to use.
[ -n "${PEC_TEST_POSTGRES_URL:-}" ] || [ -x /usr/lib/postgresql/15/bin/initdb ] || need+=(postgresql-15)
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
race_pkgs=(./hsm/... ./certvalidation/... ./tsa/... ./gateway/... ./proof/... ./signing/... ./middleoffice/... ./evidence/...)
echo "== go test -race ${race_pkgs[*]}"
go test -race -count=1 "${race_pkgs[@]}"

others=$(go list ./... | grep -v -E '^pec/(hsm|certvalidation|tsa|gateway|proof|signing|middleoffice|evidence)(/|$)')
echo "== go test (the other packages)"
go test -count=1 $others
