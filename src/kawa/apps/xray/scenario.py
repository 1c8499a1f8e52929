"""The scanner-change scenario, measured offline: how much the champion loses on the new scanner's images,
how far the image summary moves, and what a model retrained on the new scanner gets back.

The loop (retrain → shadow → canary → promote) is judged against these numbers: ``auroc_before`` (old
scanner, old model), ``auroc_degraded`` (new scanner, old model) and ``auroc_retrained`` (new scanner, a
model trained on the new scanner's images). Run it with::

    python -m kawa.apps.xray.scenario [--images 400] [--seeds 3] [--size 256]

which prints one JSON line (the means over the seeds, and each seed's numbers).
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from kawa.apps.xray.features import summarize
from kawa.apps.xray.imaging import model_input, redact_text
from kawa.apps.xray.settings import ScannerProfile, XraySettings
from kawa.apps.xray.synth import RadiographGenerator
from kawa.apps.xray.train import fit, generated_data
from kawa.monitor.drift import compare
from kawa.monitor.performance import auroc
from kawa.monitor.sketch import numeric_reference

__all__ = ["ShiftReport", "shift_report", "summary_cost_ms"]


@dataclass(frozen=True)
class ShiftReport:
    """One seeded run of the scenario (see the module docstring); ``contrast_psi``/``contrast_ks``: the drift of
    the ``contrast`` feature from a reference of old-scanner images to the new scanner's images, and
    ``contrast_psi_same`` to other old-scanner images (the no-drift baseline)."""

    seed: int
    images: int
    auroc_before: float
    auroc_degraded: float
    auroc_retrained: float
    contrast_psi: float
    contrast_ks: float
    contrast_psi_same: float


def _test_set(settings: XraySettings, n: int, seed: int, profile: ScannerProfile) -> tuple[np.ndarray, ...]:
    gen = RadiographGenerator(seed, size=settings.image_size, phi_box=settings.phi_box, profile=profile)
    xs, ys, contrast = [], [], []
    for i in range(n):
        image = gen.generate(pneumonia=bool(i % 2))
        pixels = redact_text(image.pixels, settings.redact_margin_px)
        xs.append(model_input(pixels, settings.model_input_size))
        ys.append(image.label)
        contrast.append(summarize(pixels, settings.model_input_size).contrast)
    return np.stack(xs), np.asarray(ys), np.asarray(contrast)


def shift_report(settings: XraySettings, *, images: int = 400, seed: int = 0) -> ShiftReport:
    """Train on ``images`` old-scanner images, test on ``images`` images of each scanner (the same cases), and
    retrain on ``images`` new-scanner images; seeds ``seed`` (training), ``seed + 1`` (tests) and ``seed + 2``
    (retraining)."""
    old = generated_data(settings, images, seed, scanner=settings.scanner)
    model = fit(old.x, old.y, seed=seed)
    new = generated_data(settings, images, seed + 2, scanner=settings.shifted_scanner)
    retrained = fit(new.x, new.y, seed=seed)
    xb, yb, cb = _test_set(settings, images, seed + 1, settings.scanner)
    xa, ya, ca = _test_set(settings, images, seed + 1, settings.shifted_scanner)
    half = len(cb) // 2
    reference = numeric_reference(cb[:half])
    drifted, same = compare(reference, reference.empty().add(ca)), compare(reference, reference.empty().add(cb[half:]))
    return ShiftReport(
        seed=seed,
        images=images,
        auroc_before=auroc(yb, model.predict_proba(xb)[:, 1]),
        auroc_degraded=auroc(ya, model.predict_proba(xa)[:, 1]),
        auroc_retrained=auroc(ya, retrained.predict_proba(xa)[:, 1]),
        contrast_psi=drifted.psi,
        contrast_ks=float(drifted.ks or 0.0),
        contrast_psi_same=same.psi,
    )


def summary_cost_ms(settings: XraySettings, repeats: int = 2000) -> float:
    """Milliseconds per image of :func:`kawa.apps.xray.features.summarize` on redacted generated images of
    ``settings.image_size`` (downsampling to the model input included)."""
    gen = RadiographGenerator(0, size=settings.image_size, phi_box=settings.phi_box)
    pixels = [redact_text(gen.generate().pixels, settings.redact_margin_px) for _ in range(20)]
    summarize(pixels[0], settings.model_input_size)  # warm the projection cache
    started = time.perf_counter()
    for i in range(repeats):
        summarize(pixels[i % len(pixels)], settings.model_input_size)
    return (time.perf_counter() - started) * 1000 / repeats


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--images", type=int, default=400, help="images per training and test set")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--size", type=int, default=256, help="generated image side in pixels")
    args = parser.parse_args(argv)
    settings = XraySettings(image_size=args.size)
    reports = [shift_report(settings, images=args.images, seed=100 * s) for s in range(args.seeds)]
    keys = ("auroc_before", "auroc_degraded", "auroc_retrained", "contrast_psi", "contrast_ks", "contrast_psi_same")
    summary: dict[str, object] = {k: round(float(np.mean([getattr(r, k) for r in reports])), 4) for k in keys}
    summary.update(size=args.size, images=args.images, seeds=args.seeds)
    summary["summary_ms_per_image"] = round(summary_cost_ms(settings), 4)
    summary["runs"] = [{k: round(v, 4) if isinstance(v, float) else v for k, v in asdict(r).items()} for r in reports]
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
