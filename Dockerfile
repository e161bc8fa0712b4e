# syntax=docker/dockerfile:1

# ---- build ----
# The toolchain the project is tested with (rust-version in Cargo.toml is the minimum).
FROM rust:1.95-bookworm AS builder
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked \
 && install -D -m 0755 target/release/altinn-sync /out/altinn-sync

# ---- runtime ----
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 altinn-sync \
 && useradd --system --uid 10001 --gid altinn-sync --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin altinn-sync
COPY --from=builder /out/altinn-sync /usr/local/bin/altinn-sync
USER 10001:10001
ENTRYPOINT ["/usr/local/bin/altinn-sync"]
CMD ["run"]
