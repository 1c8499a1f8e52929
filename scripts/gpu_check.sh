#!/usr/bin/env bash
# GPU check: submit a tiny PyTorch training job with `--gpu 1` through the Kawa job scheduler and show that it
# trained on CUDA on the device it was allocated.
#
# Self-contained for a GPU host that has python3 with torch (+ numpy) but no `pip install -e .` and no MLflow:
# it runs Kawa from this checkout (PYTHONPATH=src) with tracking off (KAWA_ML__TRACKING=off) and a throwaway
# Kawa home. Kawa's CLI needs pydantic, PyYAML, typer, rich and cloudevents; if the host lacks them, put them
# in ./.gpu-deps (e.g. `pip install --target .gpu-deps pydantic pyyaml typer rich cloudevents` with the same
# Python version) — it is added to PYTHONPATH when present.
#
#   scripts/gpu_check.sh            # exit 0 = the job trained on CUDA on its allocated GPU
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
[ -d .gpu-deps ] && export PYTHONPATH="$PYTHONPATH:$PWD/.gpu-deps"
export KAWA_HOME=${KAWA_HOME:-$(mktemp -d /tmp/kawa-gpu-check.XXXXXX)}
export KAWA_ML__TRACKING=off
unset CUDA_VISIBLE_DEVICES  # the scheduler decides what the job sees

echo "== host"
"$PY" --version
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=index,uuid,name,memory.total --format=csv,noheader,nounits \
  || echo "nvidia-smi not found"
"$PY" - <<'EOF'
import importlib.util, sys
missing = [m for m in ("torch", "numpy", "pydantic", "yaml", "typer", "rich", "cloudevents")
           if importlib.util.find_spec(m) is None]
if missing:
    sys.exit(f"missing Python modules: {missing}; see the header of scripts/gpu_check.sh")
import torch
print(f"torch {torch.__version__}, CUDA available to this shell: {torch.cuda.is_available()}, "
      f"devices: {torch.cuda.device_count()}")
EOF

echo "== what Kawa's scheduler finds"
"$PY" -c 'from kawa.config import load_config; from kawa.ml.resources import build_inventory; print(build_inventory(load_config().ml.inventory).describe())'

echo "== kawa jobs submit kawa.ml.trainers:torch_mlp --gpu 1 --wait"
out=$("$PY" -m kawa.cli jobs submit kawa.ml.trainers:torch_mlp --gpu 1 --cpu 2 \
        --param require_cuda=true --param steps=300 --timeout 600 --wait 2>&1) || { echo "$out"; exit 1; }
echo "$out"

echo "== checks"
job_id=$(echo "$out" | grep -o 'job j-[0-9a-f]*' | tail -1 | cut -d' ' -f2)
result="$KAWA_HOME/jobs/$job_id/result.json"
"$PY" - "$result" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
checks = {
    "ran on a CUDA device": r["device"].startswith("cuda"),
    "saw exactly one allocated GPU (CUDA_VISIBLE_DEVICES is one index)": (r["cuda_visible_devices"] or "").isdigit(),
    "loss went down": r["loss_went_down"],
}
for name, ok in checks.items():
    print(f"{'PASS' if ok else 'FAIL'}: {name}")
print(f"device {r['device']} = {r['device_name']}, CUDA_VISIBLE_DEVICES={r['cuda_visible_devices']}, "
      f"loss {r['first_loss']:.4f} -> {r['last_loss']:.4f} in {r['seconds']} s")
sys.exit(0 if all(checks.values()) else 1)
EOF
echo "GPU check passed (job $job_id, logs in $KAWA_HOME/jobs/$job_id/output.log)"
