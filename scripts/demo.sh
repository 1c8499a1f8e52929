#!/usr/bin/env bash
# Kawa's main job on a fresh machine: set up the virtualenv with what the demo needs (kawa[demo]), then run the
# X-ray demo (`kawa demo xray`). Extra arguments go to that command, e.g. ./scripts/demo.sh --duration 60.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
if ! bash scripts/setup.sh demo; then
  echo "demo.sh: could not set up .venv (see above); the demo did not start." >&2
  exit 1
fi
echo "starting: kawa demo xray $*"
exec .venv/bin/kawa demo xray "$@"
