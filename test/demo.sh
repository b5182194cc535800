#!/usr/bin/env bash
# The first command of README.md: as root on a fresh Debian machine,
# install what the lab needs, then run `tslb demo` (builds network
# namespaces, runs tslb, balances HTTP through it, prints a table, cleans
# up). Extra arguments go to `tslb demo` (e.g. -keep, -requests 2000).
set -euo pipefail
cd "$(dirname "$0")/.."
bash test/setup-debian.sh
export PATH="$PATH:/usr/local/go/bin"
go build -o ./tslb ./cmd/tslb
exec ./tslb demo "$@"
