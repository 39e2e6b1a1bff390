"""NDJSON envelopes: encode and decode round trips, headers, and malformed messages."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from streams.envelope import (
    FORMAT_NDJSON,
    HEADER_COUNT,
    HEADER_FORMAT,
    HEADER_KEYS,
    HEADER_TIME_MAX,
    HEADER_TIME_MIN,
    Envelope,
    EnvelopeError,
    decode,
    encode,
)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=8,
)


def test_encode_headers_and_value() -> None:
    value, headers = encode([b'{"a":1}', b'{"a":2}'], ["k1", "k2"], 1000, 2000)
    assert value == b'{"a":1}\n{"a":2}'
    assert headers == [
        (HEADER_FORMAT, FORMAT_NDJSON),
        (HEADER_COUNT, b"2"),
        (HEADER_TIME_MIN, b"1000"),
        (HEADER_TIME_MAX, b"2000"),
        (HEADER_KEYS, b'["k1","k2"]'),
    ]


def test_round_trip_keeps_lines_keys_and_times() -> None:
    lines = [b'{"n":1}', b'"text"', b"[]"]
    value, headers = encode(lines, ["a", "b\nc", "ä"], 5, 9)
    env = decode(value, headers)
    assert env == Envelope(lines=tuple(lines), keys=("a", "b\nc", "ä"), time_min=5, time_max=9)
    assert len(env) == 3 and env.batched
    assert env.key_at(1) == "b\nc"


def test_without_keys() -> None:
    value, headers = encode([b"1"])
    assert all(name != HEADER_KEYS for name, _ in headers)
    env = decode(value, headers)
    assert env.keys is None and env.key_at(0) is None
    assert (env.time_min, env.time_max) == (0, 0)


@given(st.lists(json_values, min_size=1, max_size=20), st.integers(0, 2**41))
def test_round_trip_of_any_compact_json(events: list[object], time_ms: int) -> None:
    lines = [orjson.dumps(e) for e in events]
    keys = [f"k{i}" for i in range(len(lines))]
    env = decode(*encode(lines, keys, time_ms, time_ms))
    assert [orjson.loads(line) for line in env.lines] == events
    assert env.keys == tuple(keys)


def test_message_without_format_header_is_one_event() -> None:
    env = decode(b'{"a":\n1}', None, key=b"user-1")
    assert env.lines == (b'{"a":\n1}',) and not env.batched
    assert env.keys == ("user-1",)
    assert decode(None).lines == (b"",)
    assert decode(b"x", [("other", b"1")]).keys is None


@pytest.mark.parametrize(
    ("lines", "keys", "fragment"),
    [
        ([], None, "at least one event"),
        ([b"1", b"2\n3"], None, "event 1 contains a newline"),
        ([b"1", b"2"], ["k"], "1 keys for 2 events"),
    ],
)
def test_encode_refuses(lines: list[bytes], keys: list[str] | None, fragment: str) -> None:
    with pytest.raises(EnvelopeError, match=fragment):
        encode(lines, keys)


def _headers(**changes: bytes | None) -> list[tuple[str, bytes]]:
    _, headers = encode([b"1", b"2"], ["a", "b"], 1, 2)
    names = {
        "fmt": HEADER_FORMAT,
        "count": HEADER_COUNT,
        "tmin": HEADER_TIME_MIN,
        "keys": HEADER_KEYS,
    }
    replaced = {names[k]: v for k, v in changes.items()}
    return [(n, replaced.get(n, v)) for n, v in headers if replaced.get(n, v) is not None]


@pytest.mark.parametrize(
    ("changes", "fragment"),
    [
        ({"fmt": b"avro/1"}, "unknown envelope format"),
        ({"count": b"3"}, "says 3 events, the value holds 2"),
        ({"count": b"two"}, "fl-count is not an integer"),
        ({"count": None}, "says 0 events"),
        ({"tmin": b"x"}, "fl-time-min is not an integer"),
        ({"keys": b"[1"}, "fl-keys is not JSON"),
        ({"keys": b'["a"]'}, "one key per event"),
        ({"keys": b'{"a":1}'}, "one key per event"),
    ],
)
def test_decode_refuses_malformed_envelopes(
    changes: dict[str, bytes | None], fragment: str
) -> None:
    with pytest.raises(EnvelopeError, match=fragment):
        decode(b"1\n2", _headers(**changes))
