"""The columnar transaction table every fraud module reads: numpy arrays, sorted by time, one row a payment.

Time is whole seconds since the start of the simulated period (midnight of ``start_date``): integers make the
window boundaries of the features exact in Python, numpy and SQL alike. ``day`` is ``time // 86400``.
Amounts are in currency units with two decimals (the handbook's ``TX_AMOUNT``).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import date
from typing import Any

import numpy as np
import numpy.typing as npt

from kawa.apps.fraud.errors import InvalidTransactions

SECONDS_PER_DAY = 86_400
NIGHT_LAST_HOUR = 6
"""A transaction is at night when its hour of day is at most this (00:00-06:59, the handbook's definition)."""

SCENARIO_NAMES = {0: "genuine", 1: "amount", 2: "terminal", 3: "customer", 4: "card_testing"}
"""``scenario`` codes: 1 amount over the threshold, 2 compromised terminal, 3 compromised card (x5 amounts),
4 card testing (the pattern that starts mid-run)."""

I64 = npt.NDArray[np.int64]
F64 = npt.NDArray[np.float64]
I8 = npt.NDArray[np.int8]
B = npt.NDArray[np.bool_]


@dataclass(frozen=True, eq=False)
class Transactions:
    """Payments sorted by ``time`` (ties by ``tx_id``), ``tx_id`` = row number when produced by the simulator.

    ``is_fraud`` and ``scenario`` are the ground truth: a scorer or a feature must never read them — labels
    reach features only as :class:`~kawa.apps.fraud.labels.LabelEvents`.
    """

    tx_id: I64
    customer_id: I64
    terminal_id: I64
    time: I64
    amount: F64
    is_fraud: B
    scenario: I8
    start_date: date = date(2018, 4, 1)

    def __post_init__(self) -> None:
        n = len(self.tx_id)
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, np.ndarray) and len(value) != n:
                raise InvalidTransactions(f"column {f.name} has {len(value)} rows, tx_id has {n}: give equal lengths")
        if n > 1 and bool(np.any(np.diff(self.time) < 0)):
            raise InvalidTransactions("transactions must be sorted by time: sort them (np.argsort(time, 'stable'))")

    def __len__(self) -> int:
        return len(self.tx_id)

    @property
    def day(self) -> I64:
        return self.time // SECONDS_PER_DAY

    @property
    def amount_cents(self) -> I64:
        """Amounts as integer cents, so window sums are exact in every implementation."""
        return np.rint(self.amount * 100.0).astype(np.int64)

    def take(self, rows: I64 | B) -> Transactions:
        """The rows selected by an index array or a boolean mask (order kept, so still time-sorted if
        ``rows`` is increasing or a mask)."""
        return Transactions(
            tx_id=self.tx_id[rows],
            customer_id=self.customer_id[rows],
            terminal_id=self.terminal_id[rows],
            time=self.time[rows],
            amount=self.amount[rows],
            is_fraud=self.is_fraud[rows],
            scenario=self.scenario[rows],
            start_date=self.start_date,
        )

    def columns(self) -> dict[str, np.ndarray[Any, Any]]:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "start_date"}

    @classmethod
    def from_columns(cls, columns: Any, start_date: date = date(2018, 4, 1)) -> Transactions:
        """A table from a mapping of columns or a ``pyarrow.Table`` with this class's column names (extra
        columns are ignored; ``is_fraud`` and ``scenario`` default to genuine when absent)."""
        names = columns.column_names if hasattr(columns, "column_names") else list(columns)

        def col(name: str, dtype: Any) -> np.ndarray[Any, Any]:
            value = columns[name]
            return np.asarray(value.to_numpy() if hasattr(value, "to_numpy") else value, dtype=dtype)

        missing = [n for n in ("tx_id", "customer_id", "terminal_id", "time", "amount") if n not in names]
        if missing:
            raise InvalidTransactions(f"columns {missing} are missing: give tx_id, customer_id, terminal_id, "
                                      "time (seconds) and amount")
        n = len(col("tx_id", np.int64))
        return cls(
            tx_id=col("tx_id", np.int64),
            customer_id=col("customer_id", np.int64),
            terminal_id=col("terminal_id", np.int64),
            time=col("time", np.int64),
            amount=col("amount", np.float64),
            is_fraud=col("is_fraud", np.bool_) if "is_fraud" in names else np.zeros(n, dtype=bool),
            scenario=col("scenario", np.int8) if "scenario" in names else np.zeros(n, dtype=np.int8),
            start_date=start_date,
        )

    def to_arrow(self) -> Any:
        """The table as a ``pyarrow.Table`` (pyarrow is imported only here)."""
        import pyarrow as pa

        return pa.table(self.columns())


def weekday(start_date: date, day: I64) -> I64:
    """Monday = 0 … Sunday = 6 of each ``day`` after ``start_date``."""
    return (start_date.weekday() + day) % 7


def is_weekend(start_date: date, time: I64) -> B:
    return weekday(start_date, time // SECONDS_PER_DAY) >= 5


def is_night(time: I64) -> B:
    return (time % SECONDS_PER_DAY) // 3600 <= NIGHT_LAST_HOUR
