"""What the sink names things in its destination (a lake folder or an S3 prefix).

Keys are ``/``-separated paths relative to the destination root; the layout is Hive-style
(the prefix template, ``sinks.prefix``, makes the folders), so DuckDB and Athena prune::

    <table>/<prefix>/part-<topic>-p<partition>-<first>-<last>.parquet
    <error prefix>/part-<topic>-p<partition>-<first>-<last>.jsonl
    <archive prefix>/part-<topic>-p<partition>-<first>-<last>.jsonl.gz
    <table>/<prefix>/part-<topic>-p<partition>-<first>-<last>.jsonl[.gz]   (format = json)
    _firelake/sinks/<sink>/<topic>/<partition>.json          (progress state)
    _firelake/sinks/<sink>/<topic>/<partition>.intent.json   (flush in progress)
    _firelake/tables/<table>/manifest.json                   (compaction, sinks.compaction)
    _firelake/tables/<table>/columns.json                    (a JSON table's columns)
    _firelake/windows/<window>/open.parquet                  (a window's open windows now)

Data file names are a pure function of the source topic, partition and offset range, so a
flush that is written again after a crash replaces its own files instead of adding copies.
"""

from __future__ import annotations

import re

__all__ = [
    "ARCHIVE_SUFFIX",
    "COMPACTED_PREFIX",
    "ERRORS_DIR",
    "FORMAT_CONVERSION_FAILED",
    "STATE_DIR",
    "archive_file_name",
    "columns_key",
    "data_file_name",
    "error_file_name",
    "intent_key",
    "json_file_name",
    "manifest_key",
    "open_windows_key",
    "parse_data_file_name",
    "state_key",
]

#: Top-level folder for records the sink could not convert (Firehose's error prefix).
ERRORS_DIR = "_errors"
#: Top-level folder for the sinks' own bookkeeping (never a table: tables match [A-Za-z_]).
STATE_DIR = "_firelake"
#: Error category folder, named like Firehose's ``format-conversion-failed`` output.
FORMAT_CONVERSION_FAILED = "format-conversion-failed"
#: Name start of a compaction's output file: readers use it only once the manifest says so.
COMPACTED_PREFIX = "compacted-"
#: File name end of a flush's raw archive (gzip JSON lines, ``sinks.archive``).
ARCHIVE_SUFFIX = ".jsonl.gz"

_DATA_RE = re.compile(r"^part-(.+)-p(\d+)-(\d{20})-(\d{20})(?:-s\d+)?\.parquet$")


def _base_name(topic: str, partition: int, first_offset: int, last_offset: int) -> str:
    if partition < 0 or first_offset < 0 or last_offset < first_offset:
        raise ValueError(
            f"bad file range: partition {partition}, offsets {first_offset}..{last_offset}"
        )
    if "/" in topic or topic in ("", ".", ".."):
        raise ValueError(f"topic {topic!r} cannot be part of a file name")
    return f"part-{topic}-p{partition}-{first_offset:020d}-{last_offset:020d}"


def data_file_name(
    topic: str, partition: int, first_offset: int, last_offset: int, variant: int = 0
) -> str:
    """The deterministic Parquet file name of a flush of ``topic``/``partition``.

    Offsets are zero-padded to 20 digits so names sort in offset order; ``variant`` n > 0
    (an inferred schema that could not be unified into one file) adds ``-s<n>``.
    """
    suffix = f"-s{variant}" if variant else ""
    return _base_name(topic, partition, first_offset, last_offset) + suffix + ".parquet"


def parse_data_file_name(name: str) -> tuple[str, int, int, int] | None:
    """(topic, partition, first, last) of a sink's data file name, None for other names."""
    match = _DATA_RE.match(name)
    if match is None:
        return None
    return match.group(1), int(match.group(2)), int(match.group(3)), int(match.group(4))


def error_file_name(topic: str, partition: int, first_offset: int, last_offset: int) -> str:
    """The deterministic JSON-lines file name of a flush's failed records."""
    return _base_name(topic, partition, first_offset, last_offset) + ".jsonl"


def archive_file_name(topic: str, partition: int, first_offset: int, last_offset: int) -> str:
    """The deterministic gzip JSON-lines file name of a flush's raw archive."""
    return _base_name(topic, partition, first_offset, last_offset) + ARCHIVE_SUFFIX


def json_file_name(
    topic: str, partition: int, first_offset: int, last_offset: int, gzip: bool = True
) -> str:
    """The deterministic JSON-lines file name of a flush of a ``format = "json"`` sink."""
    return _base_name(topic, partition, first_offset, last_offset) + (
        ".jsonl.gz" if gzip else ".jsonl"
    )


def _sink_dir(sink: str, topic: str) -> str:
    for name, value in (("sink", sink), ("topic", topic)):
        if "/" in value or value in ("", ".", ".."):
            raise ValueError(f"{name} {value!r} cannot be a folder name")
    return f"{STATE_DIR}/sinks/{sink}/{topic}"


def state_key(sink: str, topic: str, partition: int) -> str:
    """The progress state file of one (sink, topic, partition)."""
    return f"{_sink_dir(sink, topic)}/{partition}.json"


def intent_key(sink: str, topic: str, partition: int) -> str:
    """The intent file of the flush in progress for one (sink, topic, partition)."""
    return f"{_sink_dir(sink, topic)}/{partition}.intent.json"


def columns_key(table: str) -> str:
    """The declared columns of a raw JSON-lines table (``sinks.columns``)."""
    return manifest_key(table).rsplit("/", 1)[0] + "/columns.json"


def manifest_key(table: str) -> str:
    """The compaction manifest of a table (which compacted files are live, which retired)."""
    if "/" in table or table in ("", ".", ".."):
        raise ValueError(f"table {table!r} cannot be a folder name")
    return f"{STATE_DIR}/tables/{table}/manifest.json"


def open_windows_key(window: str) -> str:
    """The snapshot of a window agent's open windows (replaced whole every few seconds;
    the query service reads it as the view ``<window>_open``)."""
    if "/" in window or window in ("", ".", ".."):
        raise ValueError(f"window {window!r} cannot be a folder name")
    return f"{STATE_DIR}/windows/{window}/open.parquet"
