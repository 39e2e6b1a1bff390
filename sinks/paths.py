"""Where the sink puts things in the lake, and what it names them.

The lake layout is Hive-style, so DuckDB (and Athena) prune by folder::

    <lake>/<table>/dt=YYYY-MM-DD/hour=HH/part-<topic>-p<partition>-<first>-<last>.parquet
    <lake>/_errors/<table>/format-conversion-failed/dt=YYYY-MM-DD/part-...jsonl
    <lake>/_firelake/sinks/<sink>/<topic>/<partition>.json          (progress state)
    <lake>/_firelake/sinks/<sink>/<topic>/<partition>.intent.json   (flush in progress)

Data file names are a pure function of the source topic, partition and offset range, so a
flush that is written again after a crash replaces its own files instead of adding copies.
Temporary files start with a dot and end in ``.tmp``: no ``*.parquet`` glob ever sees them.
"""

from __future__ import annotations

from pathlib import Path

__all__ = [
    "ERRORS_DIR",
    "FORMAT_CONVERSION_FAILED",
    "STATE_DIR",
    "data_file_name",
    "error_dir",
    "error_file_name",
    "intent_path",
    "partition_dir",
    "state_path",
    "tmp_path",
]

#: Top-level lake folder for records the sink could not convert (Firehose's error prefix).
ERRORS_DIR = "_errors"
#: Top-level lake folder for the sinks' own bookkeeping (never a table: tables match [A-Za-z_]).
STATE_DIR = "_firelake"
#: Error category folder, named like Firehose's ``format-conversion-failed`` output.
FORMAT_CONVERSION_FAILED = "format-conversion-failed"


def _check_hour(dt: str, hour: int) -> None:
    # dt comes from strftime in parquet.py; a malformed one would silently create a folder
    # DuckDB's hive_partitioning then reads as a different type, so refuse it loudly.
    if len(dt) != 10 or dt[4] != "-" or dt[7] != "-" or not dt.replace("-", "").isdigit():
        raise ValueError(f"dt must be YYYY-MM-DD, got {dt!r}")
    if not 0 <= hour <= 23:
        raise ValueError(f"hour must be 0-23, got {hour!r}")


def partition_dir(lake: Path, table: str, dt: str, hour: int) -> Path:
    """The folder of one table's hour: ``<lake>/<table>/dt=<dt>/hour=<HH>``."""
    _check_hour(dt, hour)
    return lake / table / f"dt={dt}" / f"hour={hour:02d}"


def _base_name(topic: str, partition: int, first_offset: int, last_offset: int) -> str:
    if partition < 0 or first_offset < 0 or last_offset < first_offset:
        raise ValueError(
            f"bad file range: partition {partition}, offsets {first_offset}..{last_offset}"
        )
    if "/" in topic or topic in ("", ".", ".."):
        raise ValueError(f"topic {topic!r} cannot be part of a file name")
    return f"part-{topic}-p{partition}-{first_offset:020d}-{last_offset:020d}"


def data_file_name(topic: str, partition: int, first_offset: int, last_offset: int) -> str:
    """The deterministic Parquet file name of a flush of ``topic``/``partition``.

    Offsets are zero-padded to 20 digits so names sort in offset order.
    """
    return _base_name(topic, partition, first_offset, last_offset) + ".parquet"


def error_dir(lake: Path, table: str, dt: str) -> Path:
    """The folder for a table's records that failed conversion on day ``dt``."""
    _check_hour(dt, 0)
    return lake / ERRORS_DIR / table / FORMAT_CONVERSION_FAILED / f"dt={dt}"


def error_file_name(topic: str, partition: int, first_offset: int, last_offset: int) -> str:
    """The deterministic JSON-lines file name of a flush's failed records."""
    return _base_name(topic, partition, first_offset, last_offset) + ".jsonl"


def _sink_dir(lake: Path, sink: str, topic: str) -> Path:
    for name, value in (("sink", sink), ("topic", topic)):
        if "/" in value or value in ("", ".", ".."):
            raise ValueError(f"{name} {value!r} cannot be a folder name")
    return lake / STATE_DIR / "sinks" / sink / topic


def state_path(lake: Path, sink: str, topic: str, partition: int) -> Path:
    """The progress state file of one (sink, topic, partition)."""
    return _sink_dir(lake, sink, topic) / f"{partition}.json"


def intent_path(lake: Path, sink: str, topic: str, partition: int) -> Path:
    """The intent file of the flush in progress for one (sink, topic, partition)."""
    return _sink_dir(lake, sink, topic) / f"{partition}.intent.json"


def tmp_path(path: Path) -> Path:
    """The temporary sibling a file is written to before it is renamed into place."""
    return path.with_name(f".{path.name}.tmp")
