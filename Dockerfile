# The prefect-worker-rs container image: the Rust Kubernetes worker, shaped like
# Prefect's images so that the prefect-worker Helm chart runs it unchanged
# (`/usr/bin/tini -g -- /opt/prefect/entrypoint.sh prefect worker start ...`).
#
#   docker build -t prefect-worker-rs:dev .
#
# RUST_IMAGE and RUNTIME_IMAGE default to the official images; scripts/image.sh
# passes local stand-ins where no registry is reachable.
ARG RUST_IMAGE=rust:1.95-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim

FROM ${RUST_IMAGE} AS build
WORKDIR /src
COPY . .
# One release binary; `prefect` is a link to it (it dispatches on its own name).
RUN cargo build --release --locked -p prefect-worker-bin \
    && install -D -m 0755 target/release/prefect-worker /out/prefect-worker

FROM ${RUNTIME_IMAGE}
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG CREATED=unknown
LABEL org.opencontainers.image.title="prefect-worker-rs" \
      org.opencontainers.image.description="A Prefect 3 worker, written in Rust, that runs flow runs as Kubernetes Jobs; a drop-in replacement for prefect worker start --type kubernetes" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://example.invalid/prefect-worker-rs" \
      org.opencontainers.image.base.name="${RUNTIME_IMAGE}"

# tini is PID 1 in the chart's command; ca-certificates for SSL_CERT_FILE users and
# debugging (the worker itself ships its own root certificates). The user is the
# chart's runAsUser: 1001.
RUN apt-get update \
    && apt-get install -y --no-install-recommends tini=0.19.0-1+b3 ca-certificates=20230311+deb12u1 \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --gid 1001 prefect \
    && useradd --uid 1001 --gid 1001 --home-dir /home/prefect --create-home --shell /usr/sbin/nologin prefect

COPY --from=build /out/prefect-worker /usr/bin/prefect-worker
RUN ln -s prefect-worker /usr/bin/prefect
COPY deploy/image/entrypoint.sh /opt/prefect/entrypoint.sh

# The worker writes nothing outside HOME and /tmp: the root filesystem can be read-only.
ENV HOME=/home/prefect
WORKDIR /home/prefect
USER 1001:1001
# GET /health with --with-healthcheck (PREFECT_WORKER_WEBSERVER_PORT).
EXPOSE 8080
ENTRYPOINT ["/usr/bin/tini", "-g", "--", "/opt/prefect/entrypoint.sh"]
CMD ["prefect-worker", "--help"]
