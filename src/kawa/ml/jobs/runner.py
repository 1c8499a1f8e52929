"""``python -m kawa.ml.jobs.runner module:function``: the process a function job runs in.

Imports the function, calls it with the job's parameters as keyword arguments and writes a JSON-able return
value to ``<job dir>/result.json``. The current directory is importable, as with ``python -m``. Exit code 0
on success, 1 on an exception (its traceback is in the job log).

The local scheduler passes the job's id, folder, GPUs and parameters as arguments (``--job-id``,
``--job-dir``, ``--gpus``, ``--params``), so a job starts without importing Kawa's configuration. Without
them (a Kubernetes Job from ``kawa jobs render``) they are read from the ``KAWA_JOB_*`` environment through
:func:`kawa.config.job_environment`.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any


def resolve(entrypoint: str) -> Callable[..., Any]:
    module_name, _, attr = entrypoint.partition(":")
    module = importlib.import_module(module_name)
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise SystemExit(f"kawa job: {entrypoint!r}: {module_name} has no callable {attr!r}")
    return fn  # type: ignore[no-any-return]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m kawa.ml.jobs.runner", description="run a Kawa function job")
    parser.add_argument("entrypoint", help="module:function")
    parser.add_argument("--job-id")
    parser.add_argument("--job-dir")
    parser.add_argument("--gpus", help="the GPU indexes the job sees (CUDA_VISIBLE_DEVICES)")
    parser.add_argument("--params", help="the keyword arguments, as a JSON object")
    return parser


def main(argv: list[str] | None = None) -> int:
    args_list = sys.argv[1:] if argv is None else argv
    if not args_list:
        print("usage: python -m kawa.ml.jobs.runner module:function", file=sys.stderr)
        return 2
    args = _parser().parse_args(args_list)
    job_id, job_dir, gpus, params_json = args.job_id, args.job_dir, args.gpus, args.params
    if params_json is None:  # not started by the local scheduler: the job's environment says it
        from kawa.config import job_environment

        env = job_environment()
        job_id, job_dir, gpus, params_json = env.job_id, env.job_dir, env.cuda_visible_devices, env.params_json
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    params: dict[str, Any] = json.loads(params_json or "{}")
    print(f"kawa job {job_id or '?'}: {args.entrypoint}({params}) CUDA_VISIBLE_DEVICES={gpus!r}", flush=True)
    try:
        result = resolve(args.entrypoint)(**params)
    except SystemExit:
        raise
    except BaseException:
        traceback.print_exc()
        return 1
    if job_dir and result is not None:
        try:
            Path(job_dir, "result.json").write_text(json.dumps(result, default=str))
        except (TypeError, ValueError, OSError) as exc:
            print(f"kawa job: result not saved: {exc}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
