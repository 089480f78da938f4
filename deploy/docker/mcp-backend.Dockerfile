# mcp-backend: the MCP server behind keyward. It holds no secret and listens on loopback
# only; it reaches the health-data API through keyward's egress listener.
#
# Build context: the repository root.
#   docker build -f deploy/docker/mcp-backend.Dockerfile -t mcp-backend:dev .
#   az acr build -r <registry> -t mcp-backend:<tag> -f deploy/docker/mcp-backend.Dockerfile .

FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY proxy ./proxy
COPY mcp-backend ./mcp-backend
COPY tests ./tests
RUN cargo build --release --locked -p mcp-backend \
    && install -D -m 0755 target/release/mcp-backend /out/mcp-backend

# Same base as keyward: no shell, no package manager, runs as nonroot. It speaks plain HTTP
# to keyward on loopback, so it needs no CA bundle, but the base ships one anyway.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/mcp-backend /usr/local/bin/mcp-backend
# Loopback only: keyward is the only thing that may reach the backend, and the health API is
# keyward's egress route (which adds the APIM key the backend never sees).
ENV MCP_BACKEND_LISTEN=127.0.0.1:8081 \
    HEALTH_API_URL=http://127.0.0.1:8090/health/
# Not keyward's uid (65532): nothing keyward owns (its process, any secret file it can
# read) is this process's, even where a runtime ignores the pod's own user settings.
USER 65533:65533
# No EXPOSE: nothing outside the pod may connect to this container.
# No HEALTHCHECK: the server is on loopback, out of reach of kubelet and Container Apps
# probes (they connect to the pod address); keyward's probes stand for the pod.
HEALTHCHECK NONE
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/mcp-backend"]
