# syntax=docker/dockerfile:1.7
#
#   docker build -t altinn-sync \
#     --build-arg VERSION=0.1.0 --build-arg REVISION=$(git rev-parse HEAD) \
#     --build-arg CREATED=$(date -u +%Y-%m-%dT%H:%M:%SZ) \
#     --build-arg SOURCE=https://your.git.host/altinn-sync .
#
# Base images are pinned by tag. To pin a digest as well, resolve it with
# `docker buildx imagetools inspect IMAGE:TAG` and write `FROM IMAGE:TAG@sha256:DIGEST` (the tag
# stays for the reader; the digest wins). hadolint and checkov check this file
# (tests/deploy/linters.rs).

# ---- toolchain with cargo-chef ----
# The toolchain the project is tested with (rust-version in Cargo.toml is the minimum).
FROM rust:1.95.0-bookworm AS chef
# Queries are checked against the committed .sqlx/ (also set in .cargo/config.toml): no database
# is needed to build.
ENV SQLX_OFFLINE=true
RUN cargo install cargo-chef --locked --version 0.1.71
WORKDIR /src

# ---- the dependency recipe: changes only when Cargo.toml or Cargo.lock do ----
FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

# ---- build: dependencies in their own cached layer, then the crate ----
FROM chef AS builder
COPY --from=planner /src/recipe.json recipe.json
RUN cargo chef cook --release --locked --recipe-path recipe.json --bin altinn-sync
COPY . .
RUN cargo build --release --locked --bin altinn-sync \
 && install -D -m 0755 target/release/altinn-sync /out/altinn-sync

# ---- runtime ----
# Debian slim with nothing installed: no apt step (so no unpinned package versions). It already
# has tzdata (Priority: required in bookworm) for the compose scheduler's 02:00 Europe/Oslo, and
# the sh, date and install that docker-compose.yml's worker and scheduler use. The CA bundle
# for Altinn, Maskinporten and amqps comes from the pinned toolchain image (rustls reads it).
FROM debian:12.11-slim
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG CREATED=unknown
ARG SOURCE=unknown
LABEL org.opencontainers.image.title="altinn-sync" \
      org.opencontainers.image.description="Keeps accountants' Altinn access in line with AdminFlow" \
      org.opencontainers.image.licenses="MIT" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.documentation="README.md, docs/runbook.md"
COPY --from=chef /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=builder /out/altinn-sync /usr/local/bin/altinn-sync
# Numeric, with no passwd entry: the uid/gid the Kubernetes manifests run as (runAsUser 10001).
USER 10001:10001
EXPOSE 8080
# The slim image has no curl: the binary asks its own /healthz on ADMIN_LISTEN.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["/usr/local/bin/altinn-sync", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/altinn-sync"]
CMD ["run"]
