#!/bin/sh
# setup-debian.sh prepares a fresh Debian (bookworm) machine, as root, to build
# tslb and run its network-namespace lab (test/lab) and e2e tests.
#
# It is idempotent: running it again only re-checks. It installs packages and
# downloads Go modules; it starts no service, and it stops and disables the
# haproxy, prometheus and bird2 packages' own services so that nothing binds
# ports in the root namespace (the cluster lab runs bird in a namespace of its
# own). One line of output per step.
#
# prometheus (promtool, and the server the lab runs in tslb's namespace),
# podman, buildah and runc (the container image; no registry is used),
# systemd (systemd-analyze verify) and util-linux (setpriv) are for the
# tests of deploy/; chromium (headless) loads the status page in
# TestStatusPageBrowser.
set -eu

log() { printf 'setup: %s\n' "$*"; }
die() { printf 'setup: error: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "run as root"
command -v apt-get >/dev/null 2>&1 || die "apt-get not found: this script is for Debian"

repo=$(CDPATH= cd -- "$(dirname -- "$0")/.." && pwd)
[ -f "$repo/go.mod" ] || die "no go.mod in $repo"

export DEBIAN_FRONTEND=noninteractive

apt-get update -qq >/dev/null || die "apt-get update failed"
log "apt-get update: done"

pkgs="iproute2 iputils-ping nftables tcpdump ethtool iperf3 haproxy bird2 ca-certificates curl git gcc libc6-dev prometheus podman buildah runc systemd util-linux chromium"
missing=""
for p in $pkgs; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing="$missing $p"
done
if [ -n "$missing" ]; then
	# policy-rc.d 101 keeps dpkg from starting haproxy, prometheus or bird
	# while they install.
	prc=/usr/sbin/policy-rc.d
	made_prc=0
	if [ ! -e "$prc" ]; then
		printf '#!/bin/sh\nexit 101\n' >"$prc" && chmod 755 "$prc" && made_prc=1
	fi
	rc=0
	apt-get install -y -qq --no-install-recommends $missing >/dev/null || rc=$?
	[ "$made_prc" -eq 1 ] && rm -f "$prc"
	[ "$rc" -eq 0 ] || die "apt-get install$missing failed"
	log "installed:$missing"
else
	log "packages already installed: $pkgs"
fi

for svc in haproxy prometheus bird; do
	if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
		systemctl disable --now "$svc" >/dev/null 2>&1 || true
		log "$svc service: disabled and stopped (systemd)"
	else
		service "$svc" stop >/dev/null 2>&1 || true
		log "$svc service: no systemd; stopped if it was running"
	fi
done

if ! command -v go >/dev/null 2>&1 && [ -x /usr/local/go/bin/go ]; then
	PATH="/usr/local/go/bin:$PATH"
	export PATH
fi
if command -v go >/dev/null 2>&1; then
	log "go: found $(command -v go) ($(go env GOVERSION))"
else
	apt-get install -y -qq --no-install-recommends golang-go >/dev/null || die "apt-get install golang-go failed"
	log "go: installed Debian golang-go; GOTOOLCHAIN=auto fetches the go.mod version"
fi

# Go >= 1.21 fetches the go.mod toolchain itself (GOTOOLCHAIN=auto). Older
# ones (bookworm's golang-go is 1.19) cannot, so fetch the same toolchain
# module through the module proxy by hand and put it first on PATH.
export GOTOOLCHAIN="${GOTOOLCHAIN:-auto}"
want=$(sed -n 's/^toolchain go\([0-9.]*\).*/\1/p' "$repo/go.mod" | head -n1)
[ -n "$want" ] || want=$(sed -n 's/^go \([0-9.]*\).*/\1/p' "$repo/go.mod" | head -n1)
have=$(go env GOVERSION 2>/dev/null | sed 's/^go//')
have_minor=$(printf '%s' "$have" | cut -d. -f2 | sed 's/[^0-9].*//')
if [ "${have_minor:-0}" -lt 21 ]; then
	arch=$(go env GOARCH)
	mod="golang.org/toolchain@v0.0.1-go$want.linux-$arch"
	dir=$(cd / && GO111MODULE=on GOFLAGS= go mod download -json "$mod" |
		sed -n 's/^[[:space:]]*"Dir": "\(.*\)",*$/\1/p')
	[ -n "$dir" ] && [ -f "$dir/bin/go" ] || die "could not fetch $mod"
	# Module zips carry no mode bits; the go command sets them the same way.
	chmod a+x "$dir"/bin/* "$dir"/pkg/tool/*/* 2>/dev/null || true
	PATH="$dir/bin:$PATH"
	export PATH
	# Later shells (test/run-tests.sh, test/demo.sh run this script as a
	# child) find it through /usr/local/bin, which precedes /usr/bin.
	ln -sf "$dir/bin/go" /usr/local/bin/go
	ln -sf "$dir/bin/gofmt" /usr/local/bin/gofmt
	log "go: go$have predates GOTOOLCHAIN; using $mod (linked into /usr/local/bin)"
else
	log "go: go$have, GOTOOLCHAIN=$GOTOOLCHAIN selects go.mod's go $want if newer"
fi

(cd "$repo" && go mod download) || die "go mod download failed"
log "go mod download: done in $repo (toolchain $(cd "$repo" && go env GOVERSION))"
