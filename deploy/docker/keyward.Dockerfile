# keyward: the credential-holding sidecar.
#
# Build context: the repository root (the workspace manifest and lockfile live there).
#   docker build -f deploy/docker/keyward.Dockerfile -t keyward:dev .
#   az acr build -r <registry> -t keyward:<tag> -f deploy/docker/keyward.Dockerfile .
# BuildKit reads keyward.Dockerfile.dockerignore beside this file; other builders (ACR Tasks,
# kaniko) read only <context>/.dockerignore, so build from a clean export of the commit
# (`git archive`), as deploy/aca/hooks/postprovision.sh does.
#
# Nothing secret enters any layer: keyward reads its secrets at run time from Key Vault or a
# mounted directory, and its configuration holds names and places only.

FROM rust:1-bookworm AS build
WORKDIR /src
# Every workspace member must be present for cargo to load the workspace; only the keyward
# package is built.
COPY Cargo.toml Cargo.lock ./
COPY proxy ./proxy
COPY mcp-backend ./mcp-backend
COPY tests ./tests
RUN cargo build --release --locked -p keyward \
    && install -D -m 0755 target/release/keyward /out/keyward

# distroless/cc: glibc and libgcc for the Rust binary, the Debian CA bundle for the TLS to
# the upstream and the vault, no shell, no package manager. Pin by digest in production
# (gcr.io/distroless/cc-debian12:nonroot@sha256:...).
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/keyward /usr/local/bin/keyward
ENV KEYWARD_CONFIG=/etc/keyward/keyward.toml
# uid/gid 65532 (nonroot) from the base image, stated so that scanners and admission
# policies see it.
USER 65532:65532
# 8080: MCP clients (the only port a platform exposes). 9090: /livez, /readyz, /metrics
# for the orchestrator's probes and the metrics scraper. The egress listener (8090) is
# bound to loopback inside the pod and is not exposed.
EXPOSE 8080 9090
# There is no shell or curl in this image and keyward has no self-probe command; the health
# checks are the orchestrator's HTTP probes: liveness GET :9090/livez, readiness
# GET :9090/readyz (200 only once every referenced secret is loaded). `keyward check-config`
# validates the file but says nothing about a running process, so it is not used here.
HEALTHCHECK NONE
# SIGTERM drains in-flight requests for ingress.shutdown_grace (20 s by default).
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/keyward"]
CMD ["run"]
