"""Unit tests: the router's logic (routing, fan-out, partitions, envelopes, DLQ) without Kafka."""

from __future__ import annotations

import copy
from typing import Any

import orjson
import pytest

from agents.packing import EnvelopePacker
from agents.routing import Outgoing, Router
from firelake.config import FirelakeConfig, parse_config
from firelake.errors import TerminalError
from firelake.testing import example_data, sample_event
from streams.envelope import EnvelopeError, decode, encode
from streams.partitioning import partition_for_key

NOW = 1795939260.0  # 2026-11-29T08:01:00Z, the injected clock
RECEIVED_MS = 1795939200123  # the raw message's Kafka timestamp
RECEIVED = "2026-11-29T08:00:00.123000Z"


def make_config(**changes: Any) -> FirelakeConfig:
    """The shipped example with sections changed (streams/routers entries merged in)."""
    data = copy.deepcopy(example_data())
    for section, entries in changes.items():
        data.setdefault(section, {}).update(entries)
    return parse_config(data, source="<test>", environ={})


def make_router(config: FirelakeConfig | None = None, **kwargs: Any) -> Router:
    return Router(config or make_config(), "clickstream", clock=lambda: NOW, **kwargs)


def raw_message(events: list[Any], keys: list[str] | None = None) -> tuple[bytes, list]:
    lines = [e if isinstance(e, bytes) else orjson.dumps(e) for e in events]
    if keys is None:
        keys = [e["user_id"] if isinstance(e, dict) else "k" for e in events]
    return encode(lines, keys, RECEIVED_MS, RECEIVED_MS)


def route(router: Router, value: bytes, headers: Any, partition: int = 1, key: bytes | None = None):
    return router.route(value, headers, key, "raw-events", partition, 77, RECEIVED_MS)


def events_of(outgoing: list[Outgoing], stream: str) -> list[tuple[int, dict, str | None]]:
    found = []
    for o in outgoing:
        if o.stream != stream:
            continue
        envelope = decode(o.value, o.headers, o.key)
        for index, line in enumerate(envelope.lines):
            found.append((o.partition, orjson.loads(line), envelope.key_at(index)))
    return found


# ------------------------------------------------------------------ routing


def test_events_go_to_their_typed_stream_on_their_key_partition_in_order() -> None:
    router = make_router()
    events = [sample_event(n) for n in range(60)]
    value, headers = raw_message(events)
    out = route(router, value, headers)

    playback = events_of(out, "playback-events")
    pages = events_of(out, "page-events")
    playback_types = ("start", "pause", "stop", "heartbeat")
    assert sorted(e["event_id"] for _, e, _ in playback) == [
        e["event_id"] for e in events if e["event_type"] in playback_types
    ]
    assert sorted(e["event_id"] for _, e, _ in pages) == [
        e["event_id"] for e in events if e["event_type"] not in playback_types
    ]
    assert not events_of(out, "dlq")
    for partition, event, key in playback + pages:
        assert key == event["user_id"]
        assert partition == partition_for_key(event["user_id"], 4)
        assert event["receive_time"] == RECEIVED
        assert event["event_time"].endswith(".000000Z")
    # Within each (stream, partition), events keep their input order.
    for stream in ("playback-events", "page-events"):
        for p in range(4):
            ids = [e["event_id"] for part, e, _ in events_of(out, stream) if part == p]
            assert ids == sorted(ids)
    assert router.stats.events_in == 60
    assert router.stats.routed == 60
    assert router.stats.dead_lettered == {}


def test_envelope_headers_carry_count_keys_event_time_range_and_first_key() -> None:
    router = make_router()
    events = [sample_event(n, "start") for n in (0, 997 * 3, 997 * 6)]  # one user: one partition
    value, headers = raw_message(events)
    (out,) = route(router, value, headers)
    envelope = decode(out.value, out.headers)
    assert len(envelope) == 3
    assert envelope.keys == ("user-0", "user-0", "user-0")
    assert out.key == b"user-0"
    assert envelope.time_min == 1795939200000  # sample 0: 2026-11-29T08:00:00Z
    assert envelope.time_max == 1795939200000 + 997 * 6 * 1000


def test_fan_out_delivers_to_every_listed_stream() -> None:
    config = make_config(
        streams={"audit": {"partitions": 2, "schema": "playback"}},
        routers={
            "clickstream": {
                "source": "raw-events",
                "routes": {"start": ["playback-events", "audit"], "page_view": "page-events"},
            }
        },
    )
    router = make_router(config)
    event = sample_event(3, "start")
    out = route(router, *raw_message([event]))
    assert [e["event_id"] for _, e, _ in events_of(out, "playback-events")] == [event["event_id"]]
    ((partition, audited, _),) = events_of(out, "audit")
    assert partition == partition_for_key(event["user_id"], 2)
    assert audited["receive_time"] == RECEIVED
    assert router.stats.routed == 2


def test_fan_out_with_one_failing_schema_dead_letters_only_that_branch() -> None:
    config = make_config(
        routers={
            "clickstream": {
                "source": "raw-events",
                "routes": {"start": ["playback-events", "page-events"]},
            }
        },
    )
    router = make_router(config)
    event = sample_event(3, "start")  # no 'page': invalid for the page schema
    out = route(router, *raw_message([event]))
    assert len(events_of(out, "playback-events")) == 1
    assert not events_of(out, "page-events")
    ((_, record, _),) = events_of(out, "dlq")
    assert record["error_type"] == "missing_field"
    assert record["reason"] == "for page-events: field 'page': required, is missing"


@pytest.mark.parametrize(
    ("event", "reason"),
    [
        ({"event_type": "bogus"}, "field 'event_type': no route for 'bogus' (known: click, "),
        ({"user_id": "u"}, "field 'event_type' is missing; known routes: click, "),
        ({"event_type": None}, "field 'event_type' is null; known routes: "),
        ({"event_type": 5}, "field 'event_type': no route for 5 (known: "),
    ],
)
def test_no_route_goes_to_the_dlq_naming_the_value_and_known_routes(
    event: dict, reason: str
) -> None:
    router = make_router()
    line = orjson.dumps(event)
    out = route(router, *raw_message([line], ["k1"]))
    (dead,) = out
    assert dead.stream == "dlq" and dead.partition == 0
    ((_, record, _),) = events_of(out, "dlq")
    assert record["error_type"] == "no_route"
    assert record["reason"].startswith(reason)
    assert record["payload"] == line.decode()
    assert router.stats.dead_lettered == {"no_route": 1}


def test_invalid_events_become_dlq_records_with_their_position() -> None:
    router = make_router()
    good = sample_event(1, "page_view")
    lines = [
        orjson.dumps(good),
        b"{oops",
        orjson.dumps({**sample_event(2, "stop"), "event_time": "yesterday"}),
        orjson.dumps(good | {"event_id": "second"}),
    ]
    out = route(router, *raw_message(lines, ["a", "b", "c", "d"]), partition=3)
    assert [e["event_id"] for _, e, _ in events_of(out, "page-events")] == [
        good["event_id"],
        "second",
    ]
    dead = [record for _, record, _ in events_of(out, "dlq")]
    assert [(r["source_index"], r["error_type"]) for r in dead] == [
        (1, "invalid_json"),
        (2, "wrong_type"),
    ]
    assert dead[1]["reason"].startswith("field 'event_time': expected timestamp, got 'yesterday'")
    for record in dead:
        assert record["router"] == "clickstream"
        assert (record["source_topic"], record["source_partition"]) == ("raw-events", 3)
        assert record["source_offset"] == 77
        assert record["failed_at"] == "2026-11-29T08:01:00.000000Z"
    # DLQ envelopes come last and carry the failure time range.
    assert out[-1].stream == "dlq"
    assert decode(out[-1].value, out[-1].headers).time_min == int(NOW * 1000)
    assert router.stats.dead_lettered == {"invalid_json": 1, "wrong_type": 1}


def test_a_bad_envelope_is_one_dlq_record_with_index_minus_one() -> None:
    router = make_router()
    value = b'{"a":1}\n{"b":2}'
    headers = [("fl-format", b"ndjson/1"), ("fl-count", b"5")]
    out = route(router, value, headers)
    ((_, record, _),) = events_of(out, "dlq")
    assert record["error_type"] == "envelope_error"
    assert record["source_index"] == -1
    assert record["payload"] == value.decode()
    assert "says 5 events" in record["reason"]
    assert len(out) == 1


def test_events_without_keys_stay_on_source_partition_modulo() -> None:
    config = make_config(streams={"page-events": {"partitions": 3, "schema": "page"}})
    router = make_router(config)
    lines = [orjson.dumps(sample_event(n, "click")) for n in range(4)]
    value, headers = encode(lines)  # no fl-keys header
    out = route(router, value, headers, partition=7)
    assert [(o.partition, o.key) for o in out] == [(7 % 3, None)]
    assert decode(out[0].value, out[0].headers).keys is None


def test_single_message_uses_its_kafka_key() -> None:
    router = make_router()
    event = sample_event(4, "click")
    out = router.route(orjson.dumps(event), None, b"user-x", "raw-events", 0, 1, RECEIVED_MS)
    ((partition, routed, key),) = events_of(out, "page-events")
    assert (partition, key) == (partition_for_key("user-x", 4), "user-x")
    assert routed["event_id"] == event["event_id"]


def test_single_envelope_destinations_get_one_plain_message_per_event() -> None:
    config = make_config(
        streams={"page-events": {"partitions": 4, "schema": "page", "envelope": "single"}}
    )
    router = make_router(config)
    events = [sample_event(n, "click") for n in range(3)]
    out = route(router, *raw_message(events))
    assert len(out) == 3
    for o, event in zip(out, events, strict=True):
        assert o.headers is None
        assert o.key == event["user_id"].encode()
        assert o.partition == partition_for_key(event["user_id"], 4)
        assert orjson.loads(o.value)["event_id"] == event["event_id"]


def test_single_envelope_dlq_gets_one_message_per_record() -> None:
    config = make_config(streams={"dlq": {"partitions": 2, "schema": "dlq", "envelope": "single"}})
    router = make_router(config)
    out = route(router, *raw_message([b"x", b"y"], ["a", "b"]), partition=3)
    assert [(o.stream, o.partition, o.headers) for o in out] == [("dlq", 1, None)] * 2
    assert [orjson.loads(o.value)["source_index"] for o in out] == [0, 1]


def test_envelopes_split_at_the_event_bound_in_order() -> None:
    router = make_router(max_envelope_events=3)
    events = [sample_event(n * 997 * 6, "start") for n in range(10)]  # all user-0
    out = route(router, *raw_message(events))
    assert [decode(o.value, o.headers).keys for o in out] == [("user-0",) * c for c in (3, 3, 3, 1)]
    ids = [e["event_id"] for _, e, _ in events_of(out, "playback-events")]
    assert ids == [e["event_id"] for e in events]


def test_envelopes_split_at_the_byte_bound() -> None:
    router = make_router(max_envelope_bytes=2048)
    events = [sample_event(n * 997 * 6, "start") for n in range(20)]
    out = route(router, *raw_message(events))
    assert len(out) > 1
    for o in out:
        envelope = decode(o.value, o.headers)
        assert (
            sum(
                len(line) + 1 + len(k) + 3
                for line, k in zip(envelope.lines, envelope.keys, strict=True)
            )
            <= 2048
        )
    assert [e["event_id"] for _, e, _ in events_of(out, "playback-events")] == [
        e["event_id"] for e in events
    ]


def test_an_event_larger_than_an_envelope_is_dead_lettered() -> None:
    router = make_router(max_envelope_bytes=2048)
    event = sample_event(0, "start") | {"blob": "z" * 5000}
    out = route(router, *raw_message([event]))
    ((_, record, _),) = events_of(out, "dlq")
    assert record["error_type"] == "too_large"
    assert "at most 2048" in record["reason"]


def test_receive_time_falls_back_to_the_clock_without_a_kafka_timestamp() -> None:
    router = make_router()
    value, headers = raw_message([sample_event(0, "start")])
    out = router.route(value, headers, None, "raw-events", 0, 0, None)
    ((_, event, _),) = events_of(out, "playback-events")
    assert event["receive_time"] == "2026-11-29T08:01:00.000000Z"


def test_unknown_router_is_refused_with_the_known_ones() -> None:
    with pytest.raises(ValueError, match=r"no router named 'nope' \(declared: clickstream\)"):
        Router(make_config(), "nope")


# ------------------------------------------------------------------ event source mapping


def router_with(**settings: Any) -> Router:
    router = copy.deepcopy(example_data()["routers"]["clickstream"])
    router.update(settings)
    return make_router(make_config(routers={"clickstream": router}))


def test_filters_skip_and_count_events_matching_no_pattern() -> None:
    router = router_with(filters=[{"device": ["tv", "mobile"]}])
    events = [sample_event(n, "start") for n in range(8)]  # devices cycle over 4 values
    out = route(router, *raw_message(events))
    routed = events_of(out, "playback-events")
    assert {e["device"] for _, e, _ in routed} == {"tv", "mobile"}
    assert router.stats.filtered == 4 and len(routed) == 4


def test_pattern_rules_fan_out_beside_value_routes() -> None:
    router = router_with(
        rules=[
            {
                "pattern": {"bitrate_kbps": [{"numeric": [">=", 3200]}]},
                "streams": ["page-events", "playback-events"],
            }
        ]
    )
    hd, sd = sample_event(2, "start"), sample_event(1, "start")  # 3200 and 1600 kbps
    out = route(router, *raw_message([hd, sd]))
    assert [e["event_id"] for _, e, _ in events_of(out, "playback-events")] == [
        hd["event_id"],
        sd["event_id"],
    ]
    dead = events_of(out, "dlq")  # the page schema refuses a playback event: that branch only
    assert [d["error_type"] for _, d, _ in dead] == ["missing_field"]


def test_a_repeated_event_id_is_routed_once_and_ids_are_added_when_missing() -> None:
    router = make_router()
    event = sample_event(3, "stop")
    anonymous = {k: v for k, v in sample_event(4, "stop").items() if k != "event_id"}
    out = route(router, *raw_message([event, anonymous, event, anonymous]))
    routed = [e for _, e, _ in events_of(out, "playback-events")]
    assert len(routed) == 2 and router.stats.duplicates == 2
    assert len(routed[1]["event_id"]) == 32  # a stable hash of the event's bytes
    again = route(router, *raw_message([anonymous]))
    assert events_of(again, "playback-events") == []  # a later redelivery, same window


def test_transform_results_follow_firehose_semantics() -> None:
    def transform(events: list[dict]) -> list[Any]:
        from agents.transform import ProcessingFailed

        out: list[Any] = []
        for e in events:
            if e["device"] == "tv":
                out.append(None)  # dropped
            elif e["device"] == "desktop":
                out.append(ProcessingFailed("no desktops"))
            else:
                out.append({**e, "product": e["product"].upper()})
        return out

    from agents.transform import TransformRunner

    router = Router(
        make_config(), "clickstream", clock=lambda: NOW, transform=TransformRunner(transform)
    )
    events = [sample_event(n, "start") for n in range(4)]
    out = route(router, *raw_message(events))
    routed = [e for _, e, _ in events_of(out, "playback-events")]
    assert [e["product"] for e in routed] == [
        events[0]["product"].upper(),
        events[3]["product"].upper(),
    ]
    (dead,) = [d for _, d, _ in events_of(out, "dlq")]
    assert dead["error_type"] == "processing_failed" and dead["reason"] == "no desktops"
    assert dead["payload"] == orjson.dumps(events[1]).decode()
    assert router.stats.dropped == 1


def test_redriven_events_count_attempts_and_keep_the_first_attempt_time() -> None:
    router = make_router()
    bad = orjson.dumps({**sample_event(5, "start"), "event_type": "nope"})
    headers = [("fl-attempts", b"2"), ("fl-first-attempt", b"2026-11-01T00:00:00.000000Z")]
    out = router.route(bad, headers, b"user-5", "raw-events", 0, 9, RECEIVED_MS)
    (dead,) = [d for _, d, _ in events_of(out, "dlq")]
    assert dead["attempts"] == 3
    assert dead["first_attempt_at"] == "2026-11-01T00:00:00.000000Z"
    assert dead["last_attempt_at"] == dead["failed_at"]
    assert dead["source_key"] == "user-5"


def test_a_redriven_event_is_routed_although_its_failed_try_recorded_its_id() -> None:
    router = make_router()
    event = sample_event(6, "start")
    line = orjson.dumps({**event, "event_type": "nope"})  # no route: dead-lettered
    out = router.route(line, None, b"user-6", "raw-events", 0, 1, RECEIVED_MS)
    assert [d["error_type"] for _, d, _ in events_of(out, "dlq")] == ["no_route"]
    fixed = orjson.dumps(event)  # same id, redriven after the fix
    redriven = router.route(fixed, [("fl-attempts", b"1")], b"user-6", "raw-events", 0, 2, None)
    assert [e["event_id"] for _, e, _ in events_of(redriven, "playback-events")] == [
        event["event_id"]
    ]
    assert router.stats.duplicates == 0
    repeat = router.route(fixed, None, b"user-6", "raw-events", 0, 3, RECEIVED_MS)
    assert events_of(repeat, "playback-events") == []  # a plain repeat is still a duplicate


def test_records_past_the_maximum_age_go_to_the_dlq() -> None:
    router = router_with(max_record_age_seconds=30)
    out = router.route(
        *raw_message([sample_event(1)]), None, "raw-events", 0, 1, int((NOW - 31) * 1000)
    )
    assert [d["error_type"] for _, d, _ in events_of(out, "dlq")] == ["record_too_old"]


def test_date_and_hour_are_stamped_when_the_schema_declares_them() -> None:
    data = copy.deepcopy(example_data())
    data["schemas"]["playback"]["fields"].update(event_date="string", event_hour="int")
    router = make_router(parse_config(data, source="<test>", environ={}))
    ((_, routed, _),) = events_of(
        route(router, *raw_message([sample_event(3600, "start")])), "playback-events"
    )
    assert (routed["event_date"], routed["event_hour"]) == ("2026-11-29", 9)


def test_the_envelope_packer_splits_per_slot_in_order_and_keeps_singles_in_place() -> None:
    packer = EnvelopePacker(max_events=2, max_bytes=1024, keyed=True)
    for n in range(5):
        packer.add("a", n % 2, b'{"n":%d}' % n, f"k{n}", n, "")
    packer.single("s", 0, b"{}", None, (9,))
    out = packer.finish()
    assert [(o.stream, o.partition, o.origins) for o in out] == [
        ("a", 0, (0, 2)),  # full at its third line: sealed before it
        ("s", 0, (9,)),
        ("a", 0, (4,)),  # the open envelopes, in the order they were opened
        ("a", 1, (1, 3)),
    ]
    first = decode(out[0].value, out[0].headers, out[0].key)
    assert out[0].key == b"k0" and tuple(first.keys or ()) == ("k0", "k2")
    assert out[1].key is None and out[1].headers is None
    assert packer.too_large(b"x" * 1022, None) is False
    assert packer.too_large(b"x" * 1020, "kk") is True
    assert packer.finish() == []


def test_bad_envelopes_are_terminal_errors() -> None:
    assert issubclass(EnvelopeError, TerminalError) and issubclass(EnvelopeError, ValueError)
