# shellcheck shell=bash
# SPDX-License-Identifier: Apache-2.0
# The container image for the image and Kubernetes tests (tests/image.sh, tests/kube.sh): built from
# the Dockerfile with podman on a machine that reaches no registry. Source it, then:
#
#   image_podman_setup CACHE_DIR      podman settings for this machine (exports CONTAINERS_CONF)
#   image_ensure SRC CACHE_DIR        sets CCRELAY_IMAGE, building it only when its inputs changed
#
# The bases the Dockerfile names (debian:bookworm, debian:bookworm-slim) are imported from a debootstrap
# minbase tarball (tests/lib/rootfs.sh, cached in CACHE_DIR) unless podman already holds images of those
# names; the build runs with --pull=never and host networking (apt-get reaches Debian's mirror). The
# image is tagged localhost/ccrelay:ci-HASH and labelled ccrelay.ci.hash=HASH, HASH covering the build
# context (Dockerfile, .dockerignore, CMakeLists.txt, include/, relay/, deploy/cmake/) and the base
# image IDs: an unchanged tree reuses the image, a changed one rebuilds (podman's layer cache keeps the
# apt-get layers as long as the bases stay). The git revision is a build argument and label, not part
# of HASH: a commit that changes no built file reuses the image built from an earlier one.
# Needs root (rootful podman: storage under /var/lib/containers is shared by every run on the machine,
# so the import and build hold a lock).

IMAGE_LOCK=${IMAGE_LOCK:-/run/lock/ccrelay-image.lock}

img_log() { printf 'image: %s\n' "$*" >&2; }

# image_podman_setup CACHE_DIR: a containers.conf of our own, exported as CONTAINERS_CONF, for what a
# default rootful podman gets wrong in a sandbox: it raises RLIMIT_NOFILE/RLIMIT_NPROC of every container
# to 1048576/4194304, which fails without CAP_SYS_RESOURCE ("setrlimit RLIMIT_NOFILE: Operation not
# permitted"), so the limits are set to what this process may grant; and crun 1.8 (bookworm's default
# runtime) refuses a hybrid cgroup v1/v2 host ("cgroups in hybrid mode not supported"), so runc runs the
# containers (it works on v1, hybrid and v2 alike).
image_podman_setup() {
  local cache=$1 nofile
  command -v podman >/dev/null || { img_log "podman not installed (deploy/install-deps.sh)"; return 1; }
  command -v runc >/dev/null || { img_log "runc not installed (deploy/install-deps.sh)"; return 1; }
  [[ $(id -u) == 0 ]] || { img_log "needs root (rootful podman)"; return 1; }
  mkdir -p "$cache"
  nofile=$(ulimit -Hn)
  [[ $nofile == unlimited || $nofile -gt 65536 ]] && nofile=65536
  cat >"$cache/containers.conf" <<EOF
# written by tests/lib/image.sh
[containers]
default_ulimits = ["nofile=$nofile:$nofile", "nproc=4096:4096"]
[engine]
runtime = "runc"
EOF
  export CONTAINERS_CONF=$cache/containers.conf
}

# The ID of image NAME in podman's store, or nothing.
img_id() { podman image inspect --format '{{.Id}}' "$1" 2>/dev/null || true; }

# image_ensure_bases CACHE_DIR: docker.io/library/debian:bookworm and :bookworm-slim, imported from the
# minbase tarball when missing. One root file system serves both stages: the build stage apt-gets its
# compilers, the runtime stage finds its libraries already there.
image_ensure_bases() {
  local cache=$1 name tarball id=
  for name in docker.io/library/debian:bookworm-slim docker.io/library/debian:bookworm; do
    [[ -n $(img_id "$name") ]] && continue
    if [[ -z $id ]]; then
      tarball=$("$CR_SRC/tests/lib/rootfs.sh" "$cache") || return 1
      id=$(podman import --quiet --change 'CMD ["/bin/bash"]' \
        --change 'LABEL ccrelay.base="debootstrap --variant=minbase bookworm (tests/lib/rootfs.sh)"' \
        "$tarball" "$name") || { img_log "podman import of $tarball failed"; return 1; }
      img_log "imported $tarball as $name"
    else
      podman tag "$id" "$name" || return 1
      img_log "tagged it $name too"
    fi
  done
}

# image_hash SRC: the content hash of the build context and the bases.
image_hash() {
  local src=$1
  {
    (cd "$src" && find Dockerfile .dockerignore CMakeLists.txt include relay deploy/cmake -type f -print0 |
      LC_ALL=C sort -z | xargs -0 sha256sum)
    img_id docker.io/library/debian:bookworm
    img_id docker.io/library/debian:bookworm-slim
  } | sha256sum | cut -c1-16
}

# image_ensure SRC CACHE_DIR: sets CCRELAY_IMAGE (localhost/ccrelay:ci-HASH), building when missing.
image_ensure() {
  local src=$1 cache=$2 hash rev t0 log rc=0
  mkdir -p "$cache" "$(dirname "$IMAGE_LOCK")"
  exec {lockfd}>"$IMAGE_LOCK"
  flock -w 1200 "$lockfd" || { img_log "another image build held $IMAGE_LOCK for 20 minutes"; return 1; }
  t0=$SECONDS
  image_ensure_bases "$cache" || rc=1
  if ((rc == 0)); then
    hash=$(image_hash "$src")
    CCRELAY_IMAGE=localhost/ccrelay:ci-$hash
    if [[ $(podman image inspect --format '{{index .Labels "ccrelay.ci.hash"}}' "$CCRELAY_IMAGE" 2>/dev/null) == "$hash" ]]; then
      img_log "reusing $CCRELAY_IMAGE (build context unchanged)"
    else
      rev=$(git -C "$src" describe --always --dirty --abbrev=12 2>/dev/null || echo unknown)
      log=$cache/image-build.log
      img_log "building $CCRELAY_IMAGE (revision $rev; log: $log)"
      if podman build --pull=never --format docker --network host --layers \
          --build-arg CCRELAY_REVISION="$rev" --label ccrelay.ci.hash="$hash" \
          -t "$CCRELAY_IMAGE" -f "$src/Dockerfile" "$src" >"$log" 2>&1; then
        img_log "built $CCRELAY_IMAGE in $((SECONDS - t0)) s"
      else
        tail -25 "$log" >&2
        img_log "podman build failed (full log: $log)"
        rc=1
      fi
    fi
  fi
  flock -u "$lockfd"
  exec {lockfd}>&-
  return $rc
}
