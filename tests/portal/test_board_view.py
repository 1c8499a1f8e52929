"""The generic board's pure parts: captions that tell keys apart, results joined to images by any key,
time series with distinct events, and panel actions read from the spec."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kawa.apps.board import BoardSpec, Count, Counters, Table
from kawa.errors import ConfigError
from kawa.portal.board_view import board_of, captions, join_events, series
from kawa.portal.permissions import Action
from kawa.portal.sources.events import EventRow

segment = st.text(alphabet="ab-1.", min_size=1, max_size=4)
keys = st.lists(st.lists(segment, min_size=1, max_size=4).map("/".join), min_size=1, max_size=12, unique=True)


def test_captions_show_the_part_that_differs() -> None:
    run = [f"15823-dd03/scan-{i:04d}.png" for i in range(30)]
    assert captions(run) == [f"scan-{i:04d}.png" for i in range(30)]
    assert captions(["p1/img.png", "p2/img.png"]) == ["p1/img.png", "p2/img.png"]
    assert captions(["only/one.png"]) == ["one.png"]


@given(keys)
def test_captions_are_the_shortest_distinguishing_segment_suffixes(ks: list[str]) -> None:
    out = captions(ks)
    assert len(set(out)) == len(ks)  # every caption tells its image apart
    depth = max(c.count("/") for c in out) + 1
    for key, caption in zip(ks, out, strict=True):
        assert key == caption or key.endswith("/" + caption)
    if depth > 1:  # one segment fewer would not tell them apart
        shorter = ["/".join(k.split("/")[-(depth - 1):]) for k in ks]
        assert len(set(shorter)) < len(ks)


def test_a_result_is_found_by_the_incoming_and_the_processed_key() -> None:
    old = EventRow("e1", 1.0, {"key": "a.dcm", "processed_key": "a.dcm.png", "label": "Normal"})
    new = EventRow("e2", 2.0, {"key": "a.dcm", "processed_key": "a.dcm.png", "label": "Pneumonia"})
    joined = join_events([old, new])
    assert joined["a.dcm"] is new and joined["a.dcm.png"] is new


def test_series_counts_each_event_once_and_splits_by_a_field_under_either_name() -> None:
    now = 1_000_000.0
    rows = [EventRow(f"e{i}", now - i, {"model_version": 1} if i % 2 else {"version": 2}) for i in range(10)]
    out = series(rows, "model_version", 600.0, now)
    assert out["totals"] == {"1": 5, "2": 5} and out["total"] == 10
    assert sum(p["count"] for p in out["points"]) == 10
    assert out["start"] <= now - 9 and out["end"] == now


def test_panel_actions_come_from_the_spec() -> None:
    spec = BoardSpec("t", (Counters("c", (Count("n", "N", bucket="b"),)),
                           Table("t", "topic", (), action="deadletters.read")))
    board = board_of(spec)
    assert [p.action for p in board.panels] == [Action.VIEW, Action.DEADLETTERS_READ]
    with pytest.raises(ConfigError, match="names the action 'peek'"):
        board_of(BoardSpec("t", (Counters("c", (), action="peek"),)))
    with pytest.raises(ConfigError, match="give each panel its own name"):
        board_of(BoardSpec("t", (Counters("c", ()), Counters("c", ()))))


def test_a_series_can_be_placed_by_when_the_log_stored_the_events_or_by_a_field() -> None:
    """A replay of history stamps events with their old times; charted by arrival they fill the live window."""
    from kawa.portal.board_view import series

    now = 1_800_000_000.0
    rows = [EventRow(f"e{i}", 1_500_000_000.0 + i, {"action": "pass", "decided_at": now - 5 - i}, received=now - i)
            for i in range(30)]  # fmt: skip
    assert series(rows, None, 600.0, now)["total"] == 0  # by their own (2017) times: outside the window
    assert series(rows, None, 600.0, now, "@received")["total"] == 30
    by_field = series(rows, "action", 600.0, now, "decided_at")
    assert by_field["total"] == 30 and by_field["totals"] == {"pass": 30}
