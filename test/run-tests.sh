#!/usr/bin/env bash
# The test command of README.md, and exactly what CI runs (.ci/run).
# As root on a fresh Debian machine: installs what the tests need
# (test/setup-debian.sh), then checks formatting, vets, runs the pure
# packages under the race detector, fuzzes the packet parsers briefly and
# runs every test, lab (network-namespace) tests included. With CI=true a
# lab that cannot be built fails the run instead of skipping.
set -euo pipefail
cd "$(dirname "$0")/.."
bash test/setup-debian.sh
export PATH="$PATH:/usr/local/go/bin"
export CGO_ENABLED="${CGO_ENABLED:-1}" # -race needs cgo
# Artifacts of lab tests (the status page screenshot, ...) land here.
export TSLB_TEST_OUT="${TSLB_TEST_OUT:-$PWD/test-output}"
mkdir -p "$TSLB_TEST_OUT"

echo "== gofmt"
bad=$(gofmt -l $(find . -name '*.go' -not -path './.git/*'))
if [ -n "$bad" ]; then
	echo "gofmt would change:"
	echo "$bad"
	exit 1
fi

echo "== go vet"
go vet ./...

echo "== go test -race (nat, config, lb and its sub-packages)"
go test -race -count=1 ./nat/ ./config/ ./lb/...

echo "== fuzz (short; run longer locally with -fuzztime=5m)"
# Every package with fuzz targets, every target (config's FuzzParse too).
for pkg in $(go list ./... ); do
	for target in $(go test -list '^Fuzz' "$pkg" | grep '^Fuzz' || true); do
		go test -run='^$' -fuzz="^${target}\$" -fuzztime="${FUZZTIME:-8s}" "$pkg"
	done
done

echo "== go test (all packages, lab end-to-end tests included)"
go test -count=1 -p 1 -timeout 14m ./...
