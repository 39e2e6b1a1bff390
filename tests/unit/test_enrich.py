"""Enrichment: stable ids from bytes, date and hour from canonical times."""

from __future__ import annotations

from agents.enrich import date_hour, stable_event_id


def test_stable_ids_depend_only_on_the_bytes() -> None:
    assert stable_event_id(b'{"a":1}') == stable_event_id(b'{"a":1}')
    assert stable_event_id(b'{"a":1}') != stable_event_id(b'{"a":2}')
    assert len(stable_event_id(b"")) == 32


def test_date_and_hour_of_canonical_times() -> None:
    assert date_hour("2026-11-29T08:15:00.000000Z") == ("2026-11-29", 8)
    assert date_hour("yesterday") is None
    assert date_hour("2026-11-29Txx:00") is None
