#!/bin/sh
# build.sh builds tslb's container image from this checkout with what is on
# the machine: the Go toolchain builds a static binary (CGO_ENABLED=0) and
# `podman build` puts it on an empty image (Containerfile, FROM scratch).
# Nothing is pulled and the build uses no network.
#
# usage: deploy/container/build.sh [-t TAG] [-v VERSION]
#   -t TAG      image name (default localhost/tslb:dev)
#   -v VERSION  version `tslb version` prints (default: git describe, or dev)
# The last line of output is the image ID.
set -eu

here=$(CDPATH= cd -- "$(dirname -- "$0")" && pwd)
repo=$(CDPATH= cd -- "$here/../.." && pwd)
tag=localhost/tslb:dev
version=$(git -C "$repo" describe --always --dirty 2>/dev/null || echo dev)
while getopts t:v: opt; do
	case $opt in
	t) tag=$OPTARG ;;
	v) version=$OPTARG ;;
	*) echo "usage: $0 [-t TAG] [-v VERSION]" >&2; exit 2 ;;
	esac
done

command -v podman >/dev/null 2>&1 || { echo "build.sh: podman not found (apt-get install podman)" >&2; exit 1; }
if ! command -v go >/dev/null 2>&1 && [ -x /usr/local/go/bin/go ]; then
	PATH="/usr/local/go/bin:$PATH"
fi

ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT INT TERM
(cd "$repo" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=$version" -o "$ctx/tslb" ./cmd/tslb)
cp "$repo/config/example.yaml" "$ctx/tslb.yaml"
cp "$here/Containerfile" "$ctx/Containerfile"
podman build --quiet --pull=never --network=none -f "$ctx/Containerfile" -t "$tag" "$ctx"
