# ccrelay container image: built on Debian bookworm, run on a slim Debian base as a numeric non-root
# user. Buildable by buildah 1.28 and docker (no heredocs, no COPY --link).
#
#   buildah bud -t ccrelay:dev .          (or: docker build -t ccrelay:dev .)
#   docker run --rm -v $PWD/config:/etc/ccrelay:ro ccrelay:dev check -c /etc/ccrelay/agent.yaml
ARG BUILD_IMAGE=debian:bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim

FROM ${BUILD_IMAGE} AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential cmake pkg-config \
      libuv1-dev libssl-dev libnghttp2-dev libyaml-dev node-llhttp \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY CMakeLists.txt ./
COPY include ./include
COPY relay ./relay
RUN cmake -S . -B /build -DCMAKE_BUILD_TYPE=Release -DCCRELAY_TESTS=OFF \
 && cmake --build /build -j"$(nproc)" \
 && strip /build/ccrelay

FROM ${RUNTIME_IMAGE}
RUN apt-get update \
 && apt-get install -y --no-install-recommends libuv1 libssl3 libnghttp2-14 libyaml-0-2 ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && mkdir -p /etc/ccrelay /var/lib/ccrelay/trust \
 && chown -R 10001:10001 /var/lib/ccrelay
COPY --from=build /build/ccrelay /usr/local/bin/ccrelay
# Configuration (read-only) and the trust store (written by `ccrelay trust`) are volumes; logs go to stderr.
VOLUME ["/etc/ccrelay", "/var/lib/ccrelay/trust"]
USER 10001:10001
ENTRYPOINT ["/usr/local/bin/ccrelay"]
CMD ["--help"]
