# syntax=docker/dockerfile:1
#
# The webhook gateway as a static binary on distroless, running as nonroot (uid 65532).
#
#   docker build --build-arg VERSION=v1.2.3 --build-arg REVISION=$(git rev-parse HEAD) \
#     -t webhook-gateway:v1.2.3 .
#   docker run --rm -p 8080:8080 -e GATEWAY_ADMIN_TOKEN=change-me --stop-timeout 30 \
#     -v gateway-data:/var/lib/gateway webhook-gateway:v1.2.3
#
# On docker stop the gateway drains for up to max(shutdown_timeout, delivery.timeout + 5s),
# then flushes spans for up to 5s: 25s with the defaults, more than docker stop's 10s, hence
# --stop-timeout 30 (stop_grace_period: 30s in compose). Killed sooner, it loses nothing
# acknowledged; an attempt cut short is made again at the next start.
#
# The image runs `gateway serve` with the repository's gateway.yaml. Mount your own file over
# /etc/gateway/gateway.yaml (or point GATEWAY_CONFIG elsewhere) to change it; `docker run IMAGE
# validate` checks it. GATEWAY_LISTEN overrides the file's listen address, so the gateway is
# reachable through the container's published port.

FROM golang:1.26-bookworm AS build
WORKDIR /src

# Dependencies first, so that a source change does not download them again.
COPY go.mod go.sum ./
RUN go mod download

COPY . .
ARG VERSION=dev
# modernc.org/sqlite is pure Go: CGO_ENABLED=0 builds a static binary that runs on distroless.
RUN CGO_ENABLED=0 go build -trimpath \
      -ldflags "-s -w -X github.com/webhookgw/gateway/gateway.Version=${VERSION}" \
      -o /out/gateway . \
 && /out/gateway version

# distroless has no shell to mkdir or chown with: make the data directory here and copy it
# over with its owner set, so nonroot can create the SQLite file (and its -wal and -shm files).
RUN mkdir -p /out/var/lib/gateway

FROM gcr.io/distroless/static-debian12:nonroot
ARG VERSION=dev
ARG REVISION=unknown
LABEL org.opencontainers.image.title="webhook-gateway" \
      org.opencontainers.image.description="A webhook gateway: stores the events producers post and delivers them, with retries, to subscribers' webhooks" \
      org.opencontainers.image.source="https://github.com/webhookgw/gateway" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.base.name="gcr.io/distroless/static-debian12:nonroot"
COPY --from=build /out/gateway /usr/local/bin/gateway
COPY gateway.yaml /etc/gateway/gateway.yaml
COPY --from=build --chown=65532:65532 /out/var/lib/gateway /var/lib/gateway

ENV GATEWAY_CONFIG=/etc/gateway/gateway.yaml \
    GATEWAY_LISTEN=0.0.0.0:8080 \
    GATEWAY_STORE_DSN=/var/lib/gateway/gateway.db

USER nonroot:nonroot
# Declared after the directory is populated, so a new named volume starts owned by nonroot.
VOLUME /var/lib/gateway
EXPOSE 8080

# GET /readyz on the configured listener (distroless has no shell or curl; the binary asks).
HEALTHCHECK --interval=30s --timeout=5s --start-period=15s --retries=3 \
  CMD ["/usr/local/bin/gateway", "healthcheck"]

ENTRYPOINT ["/usr/local/bin/gateway"]
CMD ["serve"]
