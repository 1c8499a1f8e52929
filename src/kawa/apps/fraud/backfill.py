"""The stream's features for a whole table at once: DuckDB SQL (training backfills, batch) and numpy.

Both compute exactly the definitions of :mod:`kawa.apps.fraud.features` (see there), and return one row a
payment in the input's row order, columns in :attr:`~kawa.apps.fraud.features.FeatureSpec.names` order:

- :func:`duckdb_features` — window functions with ``RANGE`` frames over integer seconds (a half-open window
  ``(a, b]`` is the closed frame ``[a + 1, b]``) for counts and sums; payments of one customer at the same
  second are ordered by row, as the stream sees them; terminal risk is a range join of payments with the first
  fraud label of each payment, filtered on ``observed_at ≤ t``;
- :func:`numpy_features` — sorted keys and ``searchsorted`` for windows, cumulative sums for amounts, and each
  fraud label's interval of influence added with a difference array. No database needed.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from kawa.apps.fraud.errors import MissingDependency
from kawa.apps.fraud.features import FeatureSpec
from kawa.apps.fraud.labels import LabelEvents, first_fraud_labels
from kawa.apps.fraud.transactions import F64, I64, SECONDS_PER_DAY, Transactions, is_night, is_weekend

_BATCH_ROWS = 1 << 20


def feature_sql(spec: FeatureSpec) -> str:
    """The DuckDB query over tables ``tx`` (row, customer_id, terminal_id, time, amount) and ``fraud_labels``
    (tx_id, terminal_id, tx_time, observed_at: the first fraud label of each payment), ordered by ``row``."""
    day, delay = SECONDS_PER_DAY, spec.delay_days * SECONDS_PER_DAY
    ws = spec.windows_days
    wmax = max(ws)
    windows = [
        f"c{w} AS (PARTITION BY customer_id ORDER BY t RANGE BETWEEN {w * day - 1} PRECEDING AND CURRENT ROW)"
        for w in ws
    ] + [
        f"m{w} AS (PARTITION BY terminal_id ORDER BY t RANGE BETWEEN {delay + w * day - 1} PRECEDING "
        f"AND {delay} PRECEDING)"
        for w in ws
    ]
    cust = ", ".join(
        f"COUNT(*) OVER c{w} - later_n AS c_n_{w}, SUM(cents) OVER c{w} - later_c AS c_s_{w}" for w in ws
    )
    term = ", ".join(f"COUNT(*) OVER m{w} AS m_n_{w}" for w in ws)
    fraud = ", ".join(f"COUNT(*) FILTER (WHERE f.tx_time > x.t - {delay + w * day}) AS f_{w}" for w in ws)
    cols = ", ".join(
        f"CAST(c_n_{w} AS DOUBLE) AS customer_nb_tx_{w}d, "
        f"CAST(c_s_{w} AS DOUBLE) / CAST(c_n_{w} AS DOUBLE) / 100.0 AS customer_avg_amount_{w}d"
        for w in ws
    )
    tcols = ", ".join(
        f"CAST(m_n_{w} AS DOUBLE) AS terminal_nb_tx_{w}d, CASE WHEN m_n_{w} > 0 "
        f"THEN CAST(COALESCE(f_{w}, 0) AS DOUBLE) / CAST(m_n_{w} AS DOUBLE) ELSE 0.0 END AS terminal_risk_{w}d"
        for w in ws
    )
    weekday0 = spec.start_date.weekday()
    return f"""
WITH x AS (
  SELECT row, customer_id, terminal_id, time AS t, amount, CAST(round(amount * 100) AS BIGINT) AS cents FROM tx
), peers AS (
  SELECT *,
    COUNT(*) OVER later AS later_n,
    COALESCE(SUM(cents) OVER later, 0) AS later_c
  FROM x
  WINDOW later AS (PARTITION BY customer_id, t ORDER BY row ROWS BETWEEN 1 FOLLOWING AND UNBOUNDED FOLLOWING)
), cust AS (
  SELECT row, {cust} FROM peers WINDOW {", ".join(windows[: len(ws)])}
), term AS (
  SELECT row, {term} FROM x WINDOW {", ".join(windows[len(ws):])}
), frauds AS (
  SELECT x.row, {fraud}
  FROM x JOIN fraud_labels f
    ON f.terminal_id = x.terminal_id
   AND f.tx_time > x.t - {delay + wmax * day} AND f.tx_time <= x.t - {delay}
   AND f.observed_at <= x.t
  GROUP BY x.row
)
SELECT
  x.amount AS amount,
  CASE WHEN ({weekday0} + x.t // {day}) % 7 >= 5 THEN 1.0 ELSE 0.0 END AS is_weekend,
  CASE WHEN (x.t % {day}) // 3600 <= 6 THEN 1.0 ELSE 0.0 END AS is_night,
  {cols},
  {tcols}
FROM x JOIN cust USING (row) JOIN term USING (row) LEFT JOIN frauds USING (row)
ORDER BY x.row
"""


def duckdb_features(
    tx: Transactions,
    labels: LabelEvents,
    spec: FeatureSpec | None = None,
    *,
    threads: int = 2,
    memory_limit: str | None = None,
) -> F64:
    """The features of every payment, computed by DuckDB in memory with ``threads`` threads; ``memory_limit``
    (e.g. ``"3GB"``) caps DuckDB's own memory, which then spills to a temporary directory."""
    try:
        import duckdb
        import pyarrow as pa
    except ImportError as exc:
        raise MissingDependency(
            f"the SQL backfill needs duckdb and pyarrow: pip install duckdb pyarrow ({exc})"
        ) from exc
    spec = spec or FeatureSpec(start_date=tx.start_date)
    first = first_fraud_labels(labels)
    config: dict[str, Any] = {"threads": threads}
    if memory_limit is not None:
        config["memory_limit"] = memory_limit
    con: Any = duckdb.connect(config=config)
    try:
        con.register("tx", pa.table({
            "row": np.arange(len(tx), dtype=np.int64), "customer_id": tx.customer_id,
            "terminal_id": tx.terminal_id, "time": tx.time, "amount": tx.amount,
        }))
        con.register("fraud_labels", pa.table({
            "tx_id": first.tx_id, "terminal_id": first.terminal_id, "tx_time": first.tx_time,
            "observed_at": first.observed_at,
        }))
        # Arrow batches straight into the result matrix: one copy of the features in Python, not two.
        out = np.empty((len(tx), len(spec.names)), dtype=np.float64)
        pos = 0
        rel = con.sql(feature_sql(spec))
        batches = getattr(rel, "to_arrow_reader", None) or rel.fetch_arrow_reader  # DuckDB 2 / DuckDB 1
        for batch in batches(_BATCH_ROWS):
            n = batch.num_rows
            for j, name in enumerate(spec.names):
                out[pos : pos + n, j] = np.asarray(batch.column(name))
            pos += n
    finally:
        con.close()
    return out


def _window_starts(key: I64, probe: I64) -> I64:
    return np.searchsorted(key, probe, side="right").astype(np.int64)


def numpy_features(tx: Transactions, labels: LabelEvents, spec: FeatureSpec | None = None) -> F64:
    """The features of every payment, vectorised (a few sorts and binary searches, no Python loop a row)."""
    spec = spec or FeatureSpec(start_date=tx.start_date)
    n = len(tx)
    out = np.zeros((n, len(spec.names)), dtype=np.float64)
    if n == 0:
        return out
    ws = spec.windows_days
    delay = spec.delay_days * SECONDS_PER_DAY
    reach = delay + max(ws) * SECONDS_PER_DAY
    first = first_fraud_labels(labels)
    base = int(min(tx.time.min(), first.tx_time.min() if len(first) else tx.time.min()))
    top = int(max(tx.time.max(), first.tx_time.max() if len(first) else tx.time.max()))
    span = top - base + reach + 1
    rows = np.arange(n, dtype=np.int64)
    t0 = tx.time - base

    out[:, 0] = tx.amount
    out[:, 1] = is_weekend(tx.start_date, tx.time)
    out[:, 2] = is_night(tx.time)

    order = np.lexsort((rows, tx.time, tx.customer_id))
    key = tx.customer_id[order] * span + t0[order]
    cum = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(tx.amount_cents[order], out=cum[1:])
    pos = np.arange(n, dtype=np.int64)
    col = 3
    for w in ws:
        start = _window_starts(key, key - w * SECONDS_PER_DAY)
        count = pos - start + 1
        out[order, col] = count
        out[order, col + 1] = (cum[pos + 1] - cum[start]) / count / 100.0
        col += 2

    order = np.lexsort((rows, tx.time, tx.terminal_id))
    key = tx.terminal_id[order] * span + t0[order]
    hi = _window_starts(key, key - delay)
    for w in ws:
        width = delay + w * SECONDS_PER_DAY
        count = hi - _window_starts(key, key - width)
        # A fraud label at (terminal m, payment time s, observed o) counts for payments at m with
        # t in [max(s + d, o), s + d + w): add +1/-1 at the ends of that run of sorted rows.
        begin = np.maximum(first.tx_time + delay, first.observed_at)
        end = first.tx_time + width
        live = begin < end
        m = first.terminal_id[live] * span
        lo = np.searchsorted(key, m + begin[live] - base, side="left")
        up = np.searchsorted(key, m + end[live] - base, side="left")
        diff = np.zeros(n + 1, dtype=np.int64)
        np.add.at(diff, lo, 1)
        np.add.at(diff, up, -1)
        frauds = np.cumsum(diff[:n])
        out[order, col] = count
        out[order, col + 1] = np.divide(frauds, count, out=np.zeros(n), where=count > 0)
        col += 2
    return out
