"""qSOFA, SIRS and NEWS2 at every boundary of their published tables, and against a row-by-row reference."""

from __future__ import annotations

import numpy as np
import pytest

from kawa.apps.sepsis import scores as S

NAN = float("nan")


@pytest.mark.parametrize(
    ("fn", "table"),
    [
        # RCP NEWS2 chart (2017): value -> points, both sides of every edge
        (S.news2_rr, [(5, 3), (8, 3), (9, 1), (11, 1), (12, 0), (20, 0), (21, 2), (24, 2), (25, 3), (40, 3)]),
        (S.news2_spo2_scale1, [(85, 3), (91, 3), (92, 2), (93, 2), (94, 1), (95, 1), (96, 0), (100, 0)]),
        (S.news2_sbp, [(70, 3), (90, 3), (91, 2), (100, 2), (101, 1), (110, 1), (111, 0), (219, 0), (220, 3)]),
        (S.news2_pulse, [(30, 3), (40, 3), (41, 1), (50, 1), (51, 0), (90, 0), (91, 1), (110, 1), (111, 2),
                         (130, 2), (131, 3), (180, 3)]),
        (S.news2_temperature, [(34.0, 3), (35.0, 3), (35.1, 1), (36.0, 1), (36.1, 0), (38.0, 0), (38.1, 1),
                               (39.0, 1), (39.1, 2), (41.0, 2)]),
        (S.news2_consciousness, [(0, 0), (1, 3), (2, 3), (3, 3), (4, 3)]),
        (S.news2_oxygen, [(0.0, 0), (0.5, 2), (2.0, 2), (15.0, 2)]),
    ],
)
def test_news2_parameter_tables(fn: object, table: list[tuple[float, int]]) -> None:
    x = np.array([v for v, _ in table], dtype=float)
    want = np.array([p for _, p in table])
    np.testing.assert_array_equal(fn(x), want)  # type: ignore[operator]


def test_news2_spo2_scale2_depends_on_oxygen() -> None:
    spo2 = np.array([83, 84, 85, 86, 87, 88, 92, 93, 94, 95, 96, 97, 100], dtype=float)
    air = [3, 2, 2, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0]
    on_o2 = [3, 2, 2, 1, 1, 0, 0, 1, 1, 2, 2, 3, 3]
    np.testing.assert_array_equal(S.news2_spo2_scale2(spo2, np.zeros(13, bool)), air)
    np.testing.assert_array_equal(S.news2_spo2_scale2(spo2, np.ones(13, bool)), on_o2)


def test_charted_resolution_rounds_half_up_at_the_boundaries() -> None:
    # 38.04 is charted 38.0 (0 points), 38.05 is 38.1 (1 point); RR 20.4 -> 20, 20.5 -> 21
    np.testing.assert_array_equal(S.news2_temperature([38.04, 38.05, 35.04, 35.05]), [0, 1, 3, 1])
    np.testing.assert_array_equal(S.news2_rr([20.4, 20.5]), [0, 2])
    np.testing.assert_array_equal(S.sirs([38.04, 38.05], [80, 80], [16, 16], [8, 8]), [0, 1])


def test_missing_values_score_nothing() -> None:
    assert S.news2([NAN], [NAN], [0.0], [NAN], [NAN], [NAN], [NAN]).tolist() == [0]
    assert S.qsofa([NAN], [NAN], [NAN]).tolist() == [0]
    assert S.sirs([NAN], [NAN], [NAN], [NAN]).tolist() == [0]


def test_news2_aggregate_worst_and_normal() -> None:
    # worst: RR 30 (3) + SpO2 88 (3) + oxygen (2) + SBP 85 (3) + HR 140 (3) + Unresponsive (3) + 34.5 (3) = 20
    assert S.news2([30], [88], [4.0], [85], [140], [4], [34.5]).tolist() == [20]
    assert S.news2([16], [98], [0.0], [125], [75], [0], [36.8]).tolist() == [0]
    # new confusion alone is 3 (a single red score)
    assert S.news2([16], [98], [0.0], [125], [75], [1], [36.8]).tolist() == [3]


@pytest.mark.parametrize(
    ("rr", "sbp", "gcs", "acvpu", "want"),
    [(21, 101, 15, 0, 0), (22, 101, 15, 0, 1), (21, 100, 15, 0, 1), (21, 101, 14, 0, 1), (21, 101, 15, 1, 1),
     (22, 100, 14, 0, 3), (NAN, 100, NAN, 0, 1)],
)
def test_qsofa_thresholds(rr: float, sbp: float, gcs: float, acvpu: float, want: int) -> None:
    assert S.qsofa([rr], [sbp], [gcs], [acvpu]).tolist() == [want]


@pytest.mark.parametrize(
    ("temp", "hr", "rr", "wbc", "want"),
    [(38.0, 90, 20, 12.0, 0), (38.1, 90, 20, 12.0, 1), (36.0, 90, 20, 4.0, 0), (35.9, 90, 20, 4.0, 1),
     (37, 91, 20, 8, 1), (37, 90, 21, 8, 1), (37, 90, 20, 12.1, 1), (37, 90, 20, 3.9, 1), (39, 120, 30, 15, 4)],
)
def test_sirs_thresholds(temp: float, hr: float, rr: float, wbc: float, want: int) -> None:
    assert S.sirs([temp], [hr], [rr], [wbc]).tolist() == [want]


def _news2_reference(rr: float, spo2: float, o2: float, sbp: float, hr: float, acvpu: float, temp: float) -> int:
    """A row-at-a-time transcription of the RCP chart on charted integers/tenths (independent of _band)."""
    r, s, b, h, t = round(rr), round(spo2), round(sbp), round(hr), round(temp * 10)
    pts = 3 if r <= 8 else 1 if r <= 11 else 0 if r <= 20 else 2 if r <= 24 else 3
    pts += 3 if s <= 91 else 2 if s <= 93 else 1 if s <= 95 else 0
    pts += 2 if o2 > 0 else 0
    pts += 3 if b <= 90 else 2 if b <= 100 else 1 if b <= 110 else 0 if b <= 219 else 3
    pts += 3 if h <= 40 else 1 if h <= 50 else 0 if h <= 90 else 1 if h <= 110 else 2 if h <= 130 else 3
    pts += 3 if acvpu >= 1 else 0
    pts += 3 if t <= 350 else 1 if t <= 360 else 0 if t <= 380 else 1 if t <= 390 else 2
    return pts


def test_news2_matches_a_row_by_row_reference_on_random_charts() -> None:
    rng = np.random.default_rng(3)
    n = 3000
    rr = rng.integers(4, 40, n).astype(float)
    spo2 = rng.integers(80, 101, n).astype(float)
    o2 = rng.choice([0.0, 2.0], n)
    sbp = rng.integers(60, 240, n).astype(float)
    hr = rng.integers(30, 180, n).astype(float)
    acvpu = rng.integers(0, 5, n).astype(float)
    temp = rng.integers(340, 415, n) / 10.0
    got = S.news2(rr, spo2, o2, sbp, hr, acvpu, temp)
    want = [_news2_reference(*row) for row in zip(rr, spo2, o2, sbp, hr, acvpu, temp, strict=True)]
    np.testing.assert_array_equal(got, want)
