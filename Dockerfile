# syntax=docker/dockerfile:1
# Multi-stage: a static tslb binary on an empty image. Only the Go module
# proxy and the golang image's registry are needed at build time. Without a
# registry, deploy/container/build.sh builds the same runtime image with
# podman from a binary built on the host (deploy/container/Containerfile).
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /out/tslb ./cmd/tslb

FROM scratch
COPY --from=build /out/tslb /tslb
COPY config/example.yaml /etc/tslb/tslb.yaml
# tslb needs CAP_NET_RAW (AF_PACKET) and CAP_NET_ADMIN (SO_RCVBUFFORCE):
#   docker run --net=host --cap-add NET_RAW --cap-add NET_ADMIN \
#     -v /path/to/tslb.yaml:/etc/tslb/tslb.yaml:ro tslb
ENTRYPOINT ["/tslb", "run", "-c", "/etc/tslb/tslb.yaml"]
