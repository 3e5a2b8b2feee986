# syntax=docker/dockerfile:1
#
# portcullis container image: built with Rust on Debian 12, run on distroless
# (glibc, CA certificates, nothing else: no shell, no package manager) as the
# non-root user 65532.
#
#   docker build -t portcullis:0.1.0 .
#   docker run --rm -v "$PWD/config:/etc/portcullis:ro" -p 9191:9191 -p 9192:9192 \
#     portcullis:0.1.0 serve --config /etc/portcullis/portcullis.yaml
#
# Not built in this repository's CI: the machines it runs on have no
# container engine. scripts/validate-manifests parses this file with
# BuildKit's parser and checks its shape (stages, user, what is copied).

# The toolchain the project is tested with. Some dependencies need 1.89 or
# newer (serde-saphyr), whatever Cargo.toml's rust-version says.
ARG RUST_VERSION=1.95

FROM docker.io/library/rust:${RUST_VERSION}-slim-bookworm AS build
# aws-lc-sys (the TLS and signature crypto) builds C code: a C compiler and make.
RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc libc6-dev make \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# Only what the build reads. config/ is compiled into the development
# subcommands (include_str!).
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY config ./config
# Cargo's caches live in BuildKit cache mounts, outside the image: rebuilds
# after a source change skip the dependencies. The binary is copied out of the
# cached target directory.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin portcullis \
 && install -D -m 0755 target/release/portcullis /out/portcullis

# Runtime: distroless "cc" has glibc and libgcc_s (Rust binaries link both)
# and the CA bundle that key fetches over https use. Its "nonroot" tag runs as
# uid/gid 65532. Pin a digest in production (`@sha256:...`).
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/portcullis /usr/local/bin/portcullis
USER 65532:65532
# gRPC (ext_authz, health) and admin HTTP (/metrics /livez /readyz).
EXPOSE 9191 9192
ENTRYPOINT ["/usr/local/bin/portcullis"]
CMD ["serve", "--config", "/etc/portcullis/portcullis.yaml"]
