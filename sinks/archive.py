"""The raw archive (Firehose's S3 backup): every source event as gzip JSON lines.

With ``archive = true`` each flush also puts its messages' events — good and bad, exactly
as they arrived — as one ``.jsonl.gz`` file under the archive prefix, inside the same
intent as the Parquet files, so the archive is exactly-once too.

An entry (one line) is the event with what the stream had around it: a recorded event of
``streams.recorded`` — source ``key``, ``partition``, ``offset``, place in its envelope
(``index``), Kafka ``timestamp`` (ingest time) and the message's own ``headers``, the
event itself as ``value`` (or ``raw`` / ``raw_base64`` when its bytes are not JSON that
re-serialises byte for byte) — led by ``"fl_archive":1``::

    {"fl_archive":1,"key":"user-1","partition":2,"offset":41,"index":3,
     "timestamp":1764447300123,"value":{"event_type":"start",...}}

Archives written before entries kept this hold the bare event lines; :func:`decode_entry`
reads both (a bare line is an event with no key, place or time), so an old archive still
replays — round robin, as it always did. ``firelake replay --from-archive`` and ``firelake
record --from-archive`` read a table's archive with :func:`table_archive`, in key order
(by arrival hour, then source partition and offset). Reading is pure storage I/O, so this
module imports no Kafka client.
"""

from __future__ import annotations

import gzip
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import orjson

from firelake.config import FirelakeConfig
from firelake.grammars.prefix import parse_prefix
from sinks.buffer import Batch
from sinks.destinations import Destination, destination_for
from sinks.paths import ARCHIVE_SUFFIX
from streams.envelope import HEADER_FORMAT, EnvelopeError, header
from streams.recorded import RecordedEvent, events_of_message, own_headers, parse_event

__all__ = [
    "ARCHIVE_SUFFIX",
    "ENTRY_MARK",
    "TableArchive",
    "archive_bytes",
    "archive_entries",
    "archive_file",
    "archive_files",
    "archive_lines",
    "decode_entry",
    "encode_entry",
    "table_archive",
]

#: How an archive entry begins (a bare event line of an older archive does not).
ENTRY_MARK = b'{"fl_archive":1,'

#: gzip level: 3 compresses JSON nearly as well as 6 at about twice the speed.
GZIP_LEVEL = 3


def _lines(value: bytes) -> list[bytes]:
    # An envelope is NDJSON already; a single-event message may hold pretty-printed JSON,
    # which is re-serialised compactly so every archived event is exactly one line.
    if b"\n" not in value:
        return [value]
    lines = value.split(b"\n")
    try:
        return [orjson.dumps(orjson.loads(value))]
    except orjson.JSONDecodeError:
        return [line for line in lines if line.strip()]


def encode_entry(event: RecordedEvent) -> bytes:
    """One archive line: the event with its key, place, timestamp and headers."""
    return orjson.dumps({"fl_archive": 1, **event.to_json()})


def decode_entry(line: bytes) -> RecordedEvent:
    """The event of one archive line: an entry, or an older archive's bare event line."""
    if line.startswith(ENTRY_MARK):
        return parse_event(orjson.loads(line), "<archive>")
    return RecordedEvent(value=line)


def archive_entries(batch: Batch) -> list[RecordedEvent]:
    """The events of a flushed batch's kept messages, each with where and when it was."""
    events: list[RecordedEvent] = []
    meta = batch.meta or tuple((batch.max_timestamp_ms, None, ()) for _ in batch.values)
    for value, offset, (stamp, key, headers) in zip(batch.values, batch.offsets, meta, strict=True):
        if b"\n" not in value or header(headers, HEADER_FORMAT) is not None:
            try:
                events.extend(
                    events_of_message(value, headers, key, batch.partition, offset, stamp)
                )
                continue
            except EnvelopeError:
                pass
        # A malformed envelope, or lines without one (which the sink converts line by
        # line), is archived a line an event, as it arrived.
        own = own_headers(headers)
        text = key.decode("utf-8", "replace") if key is not None else None
        events.extend(
            RecordedEvent(line, text, batch.partition, offset, index, stamp, headers=own)
            for index, line in enumerate(_lines(value))
        )
    return events


def archive_bytes(batch: Batch) -> bytes:
    """The gzip JSON-lines archive of a flushed batch (one entry a line)."""
    lines = [encode_entry(event) for event in archive_entries(batch)]
    return gzip.compress(b"\n".join(lines) + b"\n", compresslevel=GZIP_LEVEL)


def archive_files(destination: Destination, prefix_text: str, table: str) -> list[str]:
    """Every archive file of a table, in key order (the prefix's static start is listed)."""
    prefix = parse_prefix(prefix_text)
    static = ""
    for part in prefix.parts:
        if part.kind == "literal":
            static += part.value
        elif part.kind == "table":
            static += table
        else:
            break
    static = static[: static.rfind("/") + 1]
    return [i.key for i in destination.list(static) if i.key.endswith(ARCHIVE_SUFFIX)]


def archive_file(destination: Destination, key: str) -> Iterator[bytes]:
    """The lines of one archive file, in order (none if it is gone)."""
    data = destination.get(key)
    if data is None:
        return
    for line in gzip.decompress(data).split(b"\n"):
        if line.strip():
            yield line


def archive_lines(destination: Destination, keys: Sequence[str]) -> Iterator[bytes]:
    """The lines of the given archive files, in order."""
    for key in keys:
        yield from archive_file(destination, key)


def _events(destination: Destination, key: str) -> Iterator[RecordedEvent]:
    for line in archive_file(destination, key):
        yield decode_entry(line)


@dataclass(frozen=True)
class TableArchive:
    """A table's archive: its sink's source stream and one lazy event iterator per file,
    in key order (a file is read only as its iterator is consumed)."""

    table: str
    stream: str
    files: list[Iterator[RecordedEvent]]


def table_archive(config: FirelakeConfig, table: str) -> TableArchive:
    """A table's archive (see :class:`TableArchive`).

    The table's sink must keep an archive; a ValueError names what is missing.
    """
    sink = next((s for s in config.sinks.values() if s.table == table), None)
    if sink is None:
        raise ValueError(f"no sink writes table {table!r}")
    if not sink.archive:
        raise ValueError(f"sink {sink.name!r} does not archive (archive = false)")
    destination = destination_for(config, sink)
    keys = archive_files(destination, sink.archive_prefix, table)
    return TableArchive(table, sink.stream, [_events(destination, key) for key in keys])
