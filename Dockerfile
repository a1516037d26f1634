# SPDX-License-Identifier: Apache-2.0
# ccrelay container image: built on Debian bookworm, run on a slim Debian base as a numeric non-root
# user. Buildable by buildah 1.28, podman and docker (no heredocs, no COPY --link).
#
#   podman build --format docker -t ccrelay:dev .      (docker format keeps the HEALTHCHECK)
#   docker run --rm --user "$(id -u):$(id -g)" -v "$PWD/config:/etc/ccrelay:ro" ccrelay:dev check -c /etc/ccrelay/agent.yaml
#
# Pin the bases by digest for reproducible builds, e.g.
#   --build-arg RUNTIME_IMAGE=debian:bookworm-slim@sha256:<digest>
ARG BUILD_IMAGE=debian:bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim

FROM ${BUILD_IMAGE} AS build
ARG CCRELAY_REVISION=unknown
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential cmake pkg-config \
      libuv1-dev libssl-dev libnghttp2-dev libyaml-dev node-llhttp \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY CMakeLists.txt ./
COPY include ./include
COPY relay ./relay
COPY deploy/cmake ./deploy/cmake
RUN cmake -S . -B /build -DCMAKE_BUILD_TYPE=Release -DCCRELAY_TESTS=OFF -DCCRELAY_PACKAGE=OFF \
      -DCCRELAY_REVISION="${CCRELAY_REVISION}" \
 && cmake --build /build -j"$(nproc)" \
 && strip /build/ccrelay

FROM ${RUNTIME_IMAGE}
ARG CCRELAY_VERSION=0.1.0
ARG CCRELAY_REVISION=unknown
ARG CCRELAY_SOURCE=https://github.com/ccrelay/ccrelay
LABEL org.opencontainers.image.title="ccrelay" \
      org.opencontainers.image.description="Open, self-hostable Cloud Connector for OpenTrust CMS and PKI" \
      org.opencontainers.image.source="${CCRELAY_SOURCE}" \
      org.opencontainers.image.version="${CCRELAY_VERSION}" \
      org.opencontainers.image.revision="${CCRELAY_REVISION}" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN apt-get update \
 && apt-get install -y --no-install-recommends libuv1 libssl3 libnghttp2-14 libyaml-0-2 ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && mkdir -p /etc/ccrelay /var/lib/ccrelay/trust \
 && chown -R 10001:10001 /var/lib/ccrelay
COPY --from=build /build/ccrelay /usr/local/bin/ccrelay
# No VOLUME: a volume declared here would shadow a trust store that an init container or a mounted
# volume provides. Mount the configuration read-only at /etc/ccrelay and give the trust store a volume
# (or rebuild it at start) as deploy/kubernetes/agent.yaml does. Logs go to stderr.
USER 10001:10001
# `ccrelay health` GETs the admin listener's /readyz of the configuration named by CCRELAY_CONFIG
# (set it to the file the container runs with: -e CCRELAY_CONFIG=/etc/ccrelay/agent.yaml).
HEALTHCHECK --interval=10s --timeout=5s --start-period=10s --retries=3 CMD ["/usr/local/bin/ccrelay", "health"]
ENTRYPOINT ["/usr/local/bin/ccrelay"]
CMD ["--help"]
