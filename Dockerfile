# syntax=docker/dockerfile:1
# restrictor image: a static-ish Rust binary on distroless (glibc, CA certificates, no shell),
# running as the distroless "nonroot" user 65532:65532 - the uid/gid the Helm chart sets.
#
# Build:  docker build -t ghcr.io/restrictor-dev/restrictor:0.1.0 .
# The build command below must stay exactly what CI builds (ci/check-chart.sh checks it).

FROM rust:1.95-bookworm AS build
WORKDIR /build
# Sources only (see .dockerignore); Cargo.lock pins every dependency (--locked).
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry cargo build --release --locked

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /build/target/release/restrictor /usr/local/bin/restrictor
USER 65532:65532
# 8443: webhook (HTTPS, /mutate); 8080: admin (HTTP, /livez /readyz /metrics)
EXPOSE 8443 8080
ENTRYPOINT ["/usr/local/bin/restrictor"]
CMD ["serve"]
