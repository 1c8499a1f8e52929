"""GrowthBook's gbstats in its own virtualenv: its pins (numpy<2, pandas<2) clash with Kawa's environment.

``KAWA_GBSTATS_PYTHON`` names an interpreter that has gbstats; otherwise a virtualenv is built once (from the
package registry) under ``~/.cache/kawa/gbstats-<version>`` and reused.
"""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

GBSTATS_VERSION = "0.8.0"


def gbstats_python() -> Path:
    given = os.environ.get("KAWA_GBSTATS_PYTHON")
    if given:
        return Path(given)
    venv = Path.home() / ".cache" / "kawa" / f"gbstats-{GBSTATS_VERSION}"
    python = venv / "bin" / "python"
    stamp = venv / ".kawa-ready"
    if stamp.exists():
        return python
    venv.parent.mkdir(parents=True, exist_ok=True)
    # Test workers (pytest-xdist) may all get here at once: one builds, the others wait on the lock, then reuse.
    with open(venv.parent / f".gbstats-{GBSTATS_VERSION}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not stamp.exists():
            subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True, timeout=300)
            subprocess.run([str(python), "-m", "pip", "install", "-q", f"gbstats=={GBSTATS_VERSION}"], check=True,
                           timeout=900)
            stamp.write_text(GBSTATS_VERSION)
    return python


_SCRIPT = r"""
import json, sys
from gbstats.frequentist.tests import SequentialConfig, SequentialTwoSidedTTest
from gbstats.models.statistics import ProportionStatistic, RegressionAdjustedStatistic, SampleMeanStatistic
out = []
for case in json.load(sys.stdin):
    if case["kind"] == "cuped":  # gbstats computes the pooled theta itself when the test is built
        a, b = (RegressionAdjustedStatistic(
            n=case["n_" + s],
            post_statistic=SampleMeanStatistic(n=case["n_" + s], sum=case["sum_" + s], sum_squares=case["ss_" + s]),
            pre_statistic=SampleMeanStatistic(n=case["n_" + s], sum=case["xsum_" + s], sum_squares=case["xss_" + s]),
            post_pre_sum_of_products=case["xy_" + s], theta=0.0) for s in ("a", "b"))
    elif case["kind"] == "mean":
        a = SampleMeanStatistic(n=case["n_a"], sum=case["sum_a"], sum_squares=case["ss_a"])
        b = SampleMeanStatistic(n=case["n_b"], sum=case["sum_b"], sum_squares=case["ss_b"])
    else:
        a = ProportionStatistic(n=case["n_a"], sum=case["sum_a"])
        b = ProportionStatistic(n=case["n_b"], sum=case["sum_b"])
    cfg = SequentialConfig(difference_type="absolute", alpha=case["alpha"],
                           sequential_tuning_parameter=case["horizon"])
    t = SequentialTwoSidedTTest(a, b, cfg)
    ci = t.confidence_interval
    out.append({"lower": float(ci[0]), "upper": float(ci[1]), "p_value": float(t.p_value),
                "estimate": float(t.point_estimate)})
json.dump(out, sys.stdout)
"""


def gbstats_sequential(cases: list[dict[str, Any]]) -> list[dict[str, float]]:
    """Run gbstats' SequentialTwoSidedTTest on each case in the gbstats interpreter."""
    done = subprocess.run([str(gbstats_python()), "-c", _SCRIPT], input=json.dumps(cases), capture_output=True,
                          text=True, check=False, timeout=120)
    assert done.returncode == 0, done.stderr
    result: list[dict[str, float]] = json.loads(done.stdout)
    return result
