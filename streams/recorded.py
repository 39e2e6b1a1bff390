"""Recorded events: one JSON line per event, as ``firelake record`` writes a case's input.

The same events are what the lake's raw archive keeps (``sinks.archive``) and what
``firelake replay --from-archive`` sends, so this module sits with the streams; the
case runner reads it as :mod:`cases.records`.

A line keeps what the stream had, so a replay can give it back exactly::

    {"key": "user-1", "partition": 2, "offset": 41, "index": 3, "timestamp": 1764447300123,
     "event_time": "2026-11-29T20:15:00.100Z", "headers": {"trace": "abc"},
     "value": {"event_type": "start", ...}}

``key``, ``partition``, ``offset`` and ``index`` (the event's place in its envelope) say
where the event was; ``timestamp`` is the Kafka timestamp in epoch milliseconds (the
ingest time, which routers stamp as ``receive_time``); ``event_time`` is the event's own
time field when the stream's schema names one (for reading; replay sends ``value``);
``headers`` are the message's own headers, without Firelake's envelope headers. ``value``
holds the event when its bytes are JSON that re-serialises byte for byte; otherwise the
bytes are kept as ``raw`` (text) or ``raw_base64`` — a broken event replays exactly as it
arrived. Hand-written inputs need only ``value`` (or ``raw``): a missing ``timestamp`` is
the previous line's (the case's start time for the first), a missing ``key`` leaves the
partition to ``partition`` or, without one, to the line's number.

:func:`pack` turns recorded events back into Kafka messages for a target stream: each
event goes to its key's partition (MD5 hash ranges, as the ingest does, so a recording
replays onto the partitions it came from, and onto more partitions key by key); the
events of one recorded message become one envelope again (so offsets and places in
envelopes come back as recorded), hand-written runs of one partition with one timestamp
and one set of headers become envelopes of bounded size, and
:func:`interleave` orders the messages by timestamp without ever reordering a partition.
Pure: no Kafka client.
"""

from __future__ import annotations

import base64
import heapq
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import orjson

from streams import envelope
from streams.partitioning import partition_for_key
from streams.ranges import Position, in_range

__all__ = [
    "MAX_ENVELOPE_BYTES",
    "MAX_ENVELOPE_EVENTS",
    "InputError",
    "OutMessage",
    "RecordedEvent",
    "event_time_of",
    "events_of_message",
    "interleave",
    "own_headers",
    "pack",
    "parse_event",
    "read_events",
    "select_range",
    "target_partition",
    "time_ordered",
    "write_events",
]

#: Events per envelope a replay packs at most (the ingest's PutRecords limit).
MAX_ENVELOPE_EVENTS = 500
#: Bytes per envelope a replay packs at most (well under the 1 MiB record limit x 500).
MAX_ENVELOPE_BYTES = 1024 * 1024


class InputError(ValueError):
    """A recorded-events file that cannot be read: names the file, the line and the field."""


@dataclass(frozen=True, slots=True)
class RecordedEvent:
    """One event of a stream with where and when it was."""

    value: bytes
    key: str | None = None
    partition: int | None = None
    offset: int | None = None
    index: int = 0
    timestamp: int = 0
    event_time: str | None = None
    headers: tuple[tuple[str, str], ...] = ()

    def to_json(self) -> dict[str, Any]:
        """The JSON object of one input line."""
        line: dict[str, Any] = {
            "key": self.key,
            "partition": self.partition,
            "offset": self.offset,
            "index": self.index,
            "timestamp": self.timestamp,
        }
        if self.event_time is not None:
            line["event_time"] = self.event_time
        if self.headers:
            line["headers"] = dict(self.headers)
        line.update(_value_fields(self.value))
        return line


def _value_fields(value: bytes) -> dict[str, Any]:
    try:
        parsed = orjson.loads(value)
    except orjson.JSONDecodeError:
        parsed = _NOT_JSON
    if parsed is not _NOT_JSON and orjson.dumps(parsed) == value:
        return {"value": parsed}
    try:
        return {"raw": value.decode("utf-8")}
    except UnicodeDecodeError:
        return {"raw_base64": base64.b64encode(value).decode("ascii")}


_NOT_JSON = object()


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    return orjson.dumps(value).decode("utf-8")


def events_of_message(
    value: bytes | None,
    headers: Sequence[tuple[str, bytes]] | None,
    key: bytes | None,
    partition: int,
    offset: int,
    timestamp: int,
    time_field: str = "",
) -> list[RecordedEvent]:
    """The events of one Kafka message (an envelope's each, or the message itself)."""
    env = envelope.decode(value, headers, key)
    own = own_headers(headers)
    return [
        RecordedEvent(
            value=line,
            key=env.key_at(index),
            partition=partition,
            offset=offset,
            index=index,
            timestamp=timestamp,
            event_time=event_time_of(line, time_field),
            headers=own,
        )
        for index, line in enumerate(env.lines)
    ]


def own_headers(headers: Sequence[tuple[str, bytes]] | None) -> tuple[tuple[str, str], ...]:
    """A message's own headers as text, without Firelake's (``fl-``) envelope headers."""
    return tuple(
        (k, v.decode("utf-8", "replace")) for k, v in (headers or ()) if not k.startswith("fl-")
    )


def event_time_of(line: bytes, time_field: str) -> str | None:
    """The event's own time field as text (None without a field name or a value)."""
    if not time_field or line[:1] != b"{":
        return None
    try:
        found = orjson.loads(line).get(time_field)
    except orjson.JSONDecodeError:
        return None
    return _text(found) if found is not None else None


def time_ordered(per_partition: Iterable[Iterable[RecordedEvent]]) -> Iterator[RecordedEvent]:
    """Events of several partitions merged by time (timestamp, partition, offset, index),
    each partition's kept in its own order."""

    def key(e: RecordedEvent) -> tuple[int, int, int, int]:
        return (e.timestamp, e.partition or 0, e.offset or 0, e.index)

    return heapq.merge(*per_partition, key=key)


def select_range(
    events: Iterable[RecordedEvent],
    start: Position,
    end: Position | None = None,
    with_time: str = "",
) -> tuple[list[RecordedEvent], int]:
    """The events in [start, end) by their own offset and timestamp, and how many could
    not be placed (old archive entries without them; all are kept when nothing bounds).

    ``with_time`` names the event-time field to fill ``event_time`` from.
    """
    kept: list[RecordedEvent] = []
    unplaced = 0
    for event in events:
        stamp = event.timestamp if event.offset is not None else None
        inside = in_range(event.offset, stamp, start, end)
        if inside is None:
            unplaced += 1
        elif inside:
            if with_time and event.event_time is None:
                event = replace(event, event_time=event_time_of(event.value, with_time))
            kept.append(event)
    return kept, unplaced


def write_events(events: Iterable[RecordedEvent]) -> Iterator[bytes]:
    """The JSON lines of recorded events."""
    for event in events:
        yield orjson.dumps(event.to_json()) + b"\n"


def _line_value(source: str, number: int, line: Mapping[str, Any]) -> bytes:
    if "value" in line:
        return orjson.dumps(line["value"])
    if "raw" in line:
        if not isinstance(line["raw"], str):
            raise InputError(f"{source}:{number}: 'raw' must be a string")
        return line["raw"].encode("utf-8")
    if "raw_base64" in line:
        try:
            return base64.b64decode(line["raw_base64"], validate=True)
        except (ValueError, TypeError):
            raise InputError(f"{source}:{number}: 'raw_base64' is not base64") from None
    raise InputError(
        f"{source}:{number}: a recorded event holds 'value' (the event), 'raw' or 'raw_base64'"
    )


def _optional_int(source: str, number: int, line: Mapping[str, Any], name: str) -> int | None:
    value = line.get(name)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise InputError(f"{source}:{number}: {name!r} must be a non-negative integer")
    return value


def read_events(
    lines: Iterable[bytes | str], source: str = "<input>", start_ms: int = 0
) -> list[RecordedEvent]:
    """Parse recorded-event lines; :class:`InputError` names the line and field at fault."""
    events = []
    timestamp = start_ms
    for number, text in enumerate(lines, 1):
        if not text.strip():
            continue
        try:
            line = orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            raise InputError(f"{source}:{number}: not JSON ({exc})") from None
        if not isinstance(line, dict):
            raise InputError(f"{source}:{number}: a recorded event is a JSON object")
        event = parse_event(line, source, number, timestamp)
        timestamp = event.timestamp
        events.append(event)
    return events


def parse_event(
    line: Mapping[str, Any], source: str = "<input>", number: int = 1, timestamp: int = 0
) -> RecordedEvent:
    """One recorded event from its JSON object (``timestamp``: the one it lacks)."""
    stamp = _optional_int(source, number, line, "timestamp")
    key = line.get("key")
    if key is not None and not isinstance(key, str):
        raise InputError(f"{source}:{number}: 'key' must be a string or null")
    headers = line.get("headers") or {}
    if not isinstance(headers, dict):
        raise InputError(f"{source}:{number}: 'headers' must be an object")
    event_time = line.get("event_time")
    return RecordedEvent(
        value=_line_value(source, number, line),
        key=key,
        partition=_optional_int(source, number, line, "partition"),
        offset=_optional_int(source, number, line, "offset"),
        index=_optional_int(source, number, line, "index") or 0,
        timestamp=stamp if stamp is not None else timestamp,
        event_time=_text(event_time) if event_time is not None else None,
        headers=tuple((str(k), _text(v)) for k, v in headers.items()),
    )


@dataclass(slots=True)
class OutMessage:
    """One Kafka message a replay sends: its partition, key, value, headers and time."""

    partition: int
    value: bytes
    headers: list[tuple[str, bytes]]
    key: bytes | None
    timestamp: int
    events: int = 1
    #: Position of its first event in the input, to break timestamp ties stably.
    order: int = field(default=0, compare=False)


def target_partition(
    event: RecordedEvent, number: int, partitions: int, same_partitions: bool = False
) -> int:
    """The partition an event replays into: its own with ``same_partitions`` (a target of
    the source's partition count), else its key's, else its own or its number's, modulo."""
    if same_partitions and event.partition is not None and event.partition < partitions:
        return event.partition
    if event.key is not None:
        return partition_for_key(event.key, partitions)
    if event.partition is not None:
        return event.partition % partitions
    return number % partitions


def _compact(event: RecordedEvent) -> bytes:
    if b"\n" not in event.value:
        return event.value
    try:  # a single message may hold pretty-printed JSON; an envelope line cannot
        return orjson.dumps(orjson.loads(event.value))
    except orjson.JSONDecodeError:
        return event.value.replace(b"\n", b" ")


def pack(
    events: Sequence[RecordedEvent],
    partitions: int,
    batched: bool = True,
    max_events: int = MAX_ENVELOPE_EVENTS,
    max_bytes: int = MAX_ENVELOPE_BYTES,
    same_partitions: bool = False,
) -> list[list[OutMessage]]:
    """The messages that replay ``events`` into a stream of ``partitions``, per partition.

    With ``batched`` (envelope streams) runs of one partition sharing timestamp, headers
    and whether they have keys become one envelope; otherwise each event is a message.
    ``same_partitions``: the target has the source's partition count, so each recorded
    event keeps its own partition (whatever partitioner its producer used).
    """
    runs: list[list[tuple[int, RecordedEvent]]] = [[] for _ in range(partitions)]
    for number, event in enumerate(events):
        runs[target_partition(event, number, partitions, same_partitions)].append((number, event))
    out: list[list[OutMessage]] = []
    for partition, items in enumerate(runs):
        messages: list[OutMessage] = []
        group: list[tuple[int, RecordedEvent]] = []
        size = 0
        for number, event in items:
            if group:
                head = group[0][1]
                if head.offset is not None or event.offset is not None:
                    # Recorded events: one message per original message, so each offset
                    # (and a DLQ record's source offset and index) comes back as it was.
                    same = batched and (event.partition, event.offset) == (
                        head.partition,
                        head.offset,
                    )
                else:
                    same = (
                        batched
                        and event.timestamp == head.timestamp
                        and len(group) < max_events
                        and size + len(event.value) + 1 <= max_bytes
                    )
                same = (
                    same
                    and event.headers == head.headers
                    and (event.key is None) == (head.key is None)
                )
                if not same:
                    messages.append(_message(group, partition, batched))
                    group, size = [], 0
            group.append((number, event))
            size += len(event.value) + 1
        if group:
            messages.append(_message(group, partition, batched))
        out.append(messages)
    return out


def _message(group: list[tuple[int, RecordedEvent]], partition: int, batched: bool) -> OutMessage:
    """One message of a run of events (an envelope, or the single event)."""
    order, first = group[0]
    headers = [(k, v.encode("utf-8")) for k, v in first.headers]
    if not batched:
        key = first.key.encode("utf-8") if first.key is not None else None
        return OutMessage(partition, first.value, headers, key, first.timestamp, 1, order)
    lines = [_compact(e) for _, e in group]
    keys = [e.key or "" for _, e in group] if first.key is not None else None
    value, env_headers = envelope.encode(lines, keys, first.timestamp, first.timestamp)
    key = keys[0].encode("utf-8") if keys else None
    return OutMessage(
        partition, value, env_headers + headers, key, first.timestamp, len(group), order
    )


def interleave(per_partition: Sequence[Sequence[OutMessage]]) -> Iterator[OutMessage]:
    """All messages by timestamp (then input position), each partition's in its own order."""
    heap: list[tuple[int, int, int, int]] = []
    for partition, messages in enumerate(per_partition):
        if messages:
            heap.append((messages[0].timestamp, messages[0].order, partition, 0))
    heapq.heapify(heap)
    while heap:
        _, _, partition, index = heapq.heappop(heap)
        messages = per_partition[partition]
        yield messages[index]
        if index + 1 < len(messages):
            following = messages[index + 1]
            heapq.heappush(heap, (following.timestamp, following.order, partition, index + 1))
