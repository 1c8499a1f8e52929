"""Turn a model version's files into a predict function, by the flavour registered for them.

The flavour is read from the ``MLmodel`` file (see :mod:`kawa.ml.flavors`); a bare model file, or a
directory holding exactly one, loads by its suffix (``.onnx``). Each loader reports the input it expects
(dtype and per-row shape) so callers can validate requests.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kawa.errors import ModelLoadError
from kawa.ml import flavors
from kawa.ml.flavors import LoadedModel, PredictFn, TensorSpec

__all__ = ["LoadedModel", "PredictFn", "TensorSpec", "load_model_dir", "load_onnx"]


def _read_mlmodel(path: Path) -> dict[str, Any]:
    import yaml

    file = path / "MLmodel"
    if not file.exists():
        return {}
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml: ~10x faster, less GIL during a swap
    data = yaml.load(file.read_text(), Loader=loader) or {}
    return data if isinstance(data, dict) else {}


def load_onnx(file: Path) -> LoadedModel:
    return flavors.get("onnx").load(Path(file), {})


def _bare_file(path: Path) -> tuple[Path, flavors.FlavorModule] | None:
    if path.is_file():
        found = flavors.for_file(path)
        return (path, found[1]) if found else None
    candidates = [(f, found[1]) for f in sorted(path.iterdir()) if f.is_file() and (found := flavors.for_file(f))]
    return candidates[0] if len(candidates) == 1 else None


def load_model_dir(path: Path) -> LoadedModel:
    """Load the model in ``path`` by its flavour: the first specific registered flavour its ``MLmodel``
    lists (sklearn, onnx, lightgbm…), else pyfunc; else a single bare model file."""
    path = Path(path)
    try:
        sections: dict[str, Any] = _read_mlmodel(path).get("flavors") or {} if path.is_dir() else {}
        matches = flavors.for_mlmodel(sections)
        if matches:
            _, flavor = matches[0]
            return flavor.load(path, sections.get(flavor.MLMODEL_KEY) or {})
        bare = _bare_file(path) if path.exists() else None
        if bare is not None:
            return bare[1].load(bare[0], {})
    except ModelLoadError:
        raise
    except ImportError as exc:
        raise ModelLoadError(f"loading {path} needs a missing package ({exc.name}): pip install 'kawa[ml]'") from exc
    except Exception as exc:
        raise ModelLoadError(f"could not load the model in {path}: {exc}") from exc
    known = ", ".join(flavors.names())
    raise ModelLoadError(
        f"no loadable model in {path}: expected an MLmodel file with one of the flavors {known} "
        "(python_function for pyfunc), or a single .onnx file"
    )
