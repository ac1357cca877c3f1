# One Dockerfile for every Rust service: one stage that has the workspace's binaries, one small
# final stage per service; docker-compose.yml picks a service with `target:`.
#
# Where the binaries come from, by the build argument BINARIES:
#   compiled  (the default) builds the workspace inside RUST_IMAGE, as on any machine that can
#             pull the official Rust image;
#   prebuilt  copies binaries that scripts/build-images.sh built with the host's cargo into
#             dist/bin/: for a machine without a registry, and to build once for tests and
#             images alike. They must link against a glibc no newer than the runtime image's.
# BuildKit (docker compose v2 uses it) builds only the stage that BINARIES names.

ARG RUST_IMAGE=rust:1.95-slim-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim
ARG BINARIES=compiled

FROM ${RUST_IMAGE} AS compiled
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bins \
 && mkdir -p /out \
 && cp target/release/foobar-dns target/release/foobar-balancer \
       target/release/foobar-webapp target/release/foobar-db-router /out/

FROM scratch AS prebuilt
COPY dist/bin/ /out/

FROM ${BINARIES} AS binaries

FROM ${RUNTIME_IMAGE} AS runtime
# /var/lib/foobar: state a service keeps (the balancers' generated TLS files); a named volume
# mounted there takes this ownership.
RUN useradd --system --uid 10001 --user-group --no-create-home --shell /usr/sbin/nologin foobar \
 && install -d -o foobar -g foobar /var/lib/foobar /var/lib/foobar/tls
USER foobar

FROM runtime AS dns
COPY --from=binaries /out/foobar-dns /usr/local/bin/
HEALTHCHECK --interval=5s --timeout=3s CMD ["foobar-dns", "--config", "/etc/foobar/dns.toml", "--probe"]
ENTRYPOINT ["foobar-dns"]
CMD ["--config", "/etc/foobar/dns.toml"]

FROM runtime AS balancer
COPY --from=binaries /out/foobar-balancer /usr/local/bin/
HEALTHCHECK --interval=5s --timeout=3s CMD ["foobar-balancer", "--config", "/etc/foobar/balancer.toml", "--probe"]
ENTRYPOINT ["foobar-balancer"]
CMD ["--config", "/etc/foobar/balancer.toml"]

FROM runtime AS webapp
COPY --from=binaries /out/foobar-webapp /usr/local/bin/
COPY webapp/static/ /usr/share/foobar/static/
HEALTHCHECK --interval=5s --timeout=3s CMD ["foobar-webapp", "--config", "/etc/foobar/webapp.toml", "--probe"]
ENTRYPOINT ["foobar-webapp"]
CMD ["--config", "/etc/foobar/webapp.toml"]

FROM runtime AS db-router
COPY --from=binaries /out/foobar-db-router /usr/local/bin/
HEALTHCHECK --interval=5s --timeout=3s CMD ["foobar-db-router", "--config", "/etc/foobar/db-router.toml", "--probe"]
ENTRYPOINT ["foobar-db-router"]
CMD ["--config", "/etc/foobar/db-router.toml"]
