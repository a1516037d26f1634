#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
# Generate the throwaway test PKI into OUTDIR (created if missing; existing files are overwritten).
# Usage: mkpki.sh [-v] OUTDIR     Quiet unless -v; non-zero exit on any failure.
# Files and conventions: tests/sims/README.md ("Test PKI").
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
if ! command -v openssl >/dev/null; then
  echo "mkpki: error: openssl not found" >&2
  exit 1
fi
exec /usr/bin/python3 "$here/mkpki.py" "$@"
