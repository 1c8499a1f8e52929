#!/usr/bin/env bash
# Kawa's main job on a fresh machine: set up the virtualenv, then run the embedded demo.
# Extra arguments go to the demo command.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
bash scripts/setup.sh
if .venv/bin/kawa demo --help 2>/dev/null | grep -q " xray "; then
  exec .venv/bin/kawa demo xray "$@"
fi
exec .venv/bin/kawa demo log "$@"
