#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Installs everything ccrelay needs to build, test and run its demo, from Debian 12 packages only.
# Safe to run again: apt-get skips what is already installed.
set -euo pipefail

packages=(
  build-essential cmake pkg-config
  libuv1-dev libssl-dev libnghttp2-dev libyaml-dev node-llhttp
  libcmocka-dev clang
  openssl curl nginx-light haproxy squid apache2-utils
  python3 python3-cryptography python3-zeep python3-spyne
  procps prometheus
  scdoc lintian debootstrap systemd
  podman runc catatonit
)

as_root=()
if [ "$(id -u)" != 0 ]; then
  command -v sudo >/dev/null || { echo "install-deps: run as root or install sudo" >&2; exit 1; }
  as_root=(sudo)
fi

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "install-deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  "${as_root[@]}" apt-get update -qq
  "${as_root[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# nginx-light's package starts a system nginx on port 80; our tests run their own on loopback ports
# and never need it, but we leave the system service as the package set it up.
