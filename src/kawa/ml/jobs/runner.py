"""``python -m kawa.ml.jobs.runner module:function``: the process a function job runs in.

Imports the function, calls it with the job's parameters (``KAWA_JOB_PARAMS``) as keyword arguments and
writes a JSON-able return value to ``$KAWA_JOB_DIR/result.json``. The current directory is importable, as
with ``python -m``. Exit code 0 on success, 1 on an exception (its traceback is in the job log).
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kawa.config import job_environment


def resolve(entrypoint: str) -> Callable[..., Any]:
    module_name, _, attr = entrypoint.partition(":")
    module = importlib.import_module(module_name)
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise SystemExit(f"kawa job: {entrypoint!r}: {module_name} has no callable {attr!r}")
    return fn  # type: ignore[no-any-return]


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m kawa.ml.jobs.runner module:function", file=sys.stderr)
        return 2
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    job = job_environment()
    params: dict[str, Any] = json.loads(job.params_json or "{}")
    print(
        f"kawa job {job.job_id or '?'}: {args[0]}({params}) CUDA_VISIBLE_DEVICES={job.cuda_visible_devices!r}",
        flush=True,
    )
    try:
        result = resolve(args[0])(**params)
    except SystemExit:
        raise
    except BaseException:
        traceback.print_exc()
        return 1
    if job.job_dir and result is not None:
        try:
            Path(job.job_dir, "result.json").write_text(json.dumps(result, default=str))
        except (TypeError, ValueError, OSError) as exc:
            print(f"kawa job: result not saved: {exc}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
