# syntax=docker/dockerfile:1
#
# The two images the Helm chart runs, from one build:
#
#   docker build --target operator -t ghcr.io/server-manager/server-manager:0.1.0 .
#   docker build --target runner   -t ghcr.io/server-manager/server-manager-runner:0.1.0 .
#
# Both run as non-root users with a read-only root filesystem (the chart sets
# runAsUser 65532 and 10001 to match the USER lines below). The playbooks are
# at /usr/share/server-manager/playbooks in both: the runner runs them, the
# operator hashes them into every Server's desired state.

ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=bookworm

# ---- build: the one binary, server-manager --------------------------------
FROM docker.io/library/rust:${RUST_VERSION}-slim-${DEBIAN_RELEASE} AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY crates ./crates
COPY benches ./benches
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin server-manager \
 && install -m 0755 target/release/server-manager /server-manager

# ---- operator: glibc and the binary, nothing else --------------------------
FROM gcr.io/distroless/cc-debian12:nonroot AS operator
COPY --from=build /server-manager /usr/local/bin/server-manager
COPY playbooks /usr/share/server-manager/playbooks
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/server-manager"]
CMD ["operator", "--help"]

# ---- runner: ansible (with the community.docker collection Debian ships in
# it) and an SSH client; tests/runner_image.rs checks these are the packages
# the runner's tests run with. ssh refuses to run for a uid without a passwd
# entry: run it as 10001 (the chart does), not as an arbitrary uid ---------
FROM docker.io/library/debian:${DEBIAN_RELEASE}-slim AS runner
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      ansible openssh-client \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --gid 10001 runner \
 && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /tmp runner
COPY --from=build /server-manager /usr/local/bin/server-manager
COPY playbooks /usr/share/server-manager/playbooks
ENV HOME=/tmp
USER 10001:10001
ENTRYPOINT ["/usr/local/bin/server-manager"]
CMD ["playbook-runner", "--help"]
