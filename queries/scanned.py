"""Bytes scanned for tables read through pyarrow (S3 lakes), measured from the reads made.

DuckDB's profiler measures the bytes of its own Parquet scans (the compressed column
chunks it reads: Athena's billing measure) but sees nothing of an Arrow dataset's scan,
which pyarrow does. So the S3 filesystem of those datasets is wrapped
(:class:`ReadLog.filesystem`): every read is logged as (path, offset, length), and after
the query :meth:`ReadLog.scanned` maps the reads onto the files' column chunks (from the
footers already read for the catalog) and sums the compressed size of each chunk a read
touched. Reads that end at the end of the file are footer reads and do not count, as in
DuckDB's figure; pre-buffering (which coalesces neighbouring chunks into one read) is off
for these datasets (:data:`SCAN_OPTIONS`), so a chunk counts only when its column was
asked for. The same query over the same files thus reports the same bytes from a local
lake and from S3.

Why not DuckDB's httpfs: the PyPI wheel ``duckdb-extension-httpfs`` (1.5.5, the newest) is
built for DuckDB 1.5.5 and DuckDB 2.0.1 refuses to load it ("can only be loaded with that
version of DuckDB"), and the machines cannot download extensions at run time.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from typing import Any

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq

__all__ = ["SCAN_OPTIONS", "ReadLog", "chunk_bytes"]

#: Fragment scan options of measured datasets: one read per column chunk.
SCAN_OPTIONS = ds.ParquetFragmentScanOptions(pre_buffer=False)


def chunk_bytes(metadata: pq.FileMetaData, reads: Iterable[tuple[int, int]], size: int) -> int:
    """Compressed bytes of the column chunks that the reads (offset, length) touched."""
    ranges = [(offset, offset + length) for offset, length in reads if offset + length < size]
    if not ranges:
        return 0
    total = 0
    for g in range(metadata.num_row_groups):
        group = metadata.row_group(g)
        for c in range(group.num_columns):
            column = group.column(c)
            start = column.data_page_offset
            if column.has_dictionary_page and column.dictionary_page_offset:
                start = min(start, column.dictionary_page_offset)
            end = start + column.total_compressed_size
            if any(low < end and high > start for low, high in ranges):
                total += column.total_compressed_size
    return total


class _LoggedFile:
    """A readable file whose reads are logged."""

    def __init__(self, inner: Any, path: str, log: ReadLog) -> None:
        self._inner = inner
        self._path = path
        self._log = log
        self.closed = False

    def read(self, nbytes: int = -1) -> bytes:
        position = self._inner.tell()
        data = self._inner.read() if nbytes is None or nbytes < 0 else self._inner.read(nbytes)
        self._log.record(self._path, position, len(data))
        return data

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._inner.seek(offset, whence)

    def tell(self) -> int:
        return self._inner.tell()

    def size(self) -> int:
        return self._inner.size()

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def writable(self) -> bool:
        return False

    def close(self) -> None:
        self.closed = True
        self._inner.close()


class _Handler(pafs.FileSystemHandler):
    """Reads through another filesystem, logging them; everything else is refused."""

    def __init__(self, inner: pafs.FileSystem, log: ReadLog) -> None:
        self.inner = inner
        self.log = log

    def get_type_name(self) -> str:
        return "firelake-logged"

    def normalize_path(self, path: str) -> str:
        return self.inner.normalize_path(path)

    def get_file_info(self, paths: list[str]) -> list[pafs.FileInfo]:
        return self.inner.get_file_info(paths)

    def get_file_info_selector(self, selector: pafs.FileSelector) -> list[pafs.FileInfo]:
        return self.inner.get_file_info(selector)

    def open_input_file(self, path: str) -> pa.PythonFile:
        return pa.PythonFile(_LoggedFile(self.inner.open_input_file(path), path, self.log), "r")

    def open_input_stream(self, path: str) -> pa.PythonFile:
        return self.open_input_file(path)

    def equals(self, other: Any) -> bool:
        return other is self

    def _read_only(self, *args: Any, **kwargs: Any) -> Any:
        raise OSError("the query engine's view of the lake is read-only")

    create_dir = delete_dir = delete_dir_contents = delete_root_dir_contents = _read_only
    delete_file = move = copy_file = open_output_stream = open_append_stream = _read_only


class ReadLog:
    """The reads of Arrow dataset scans since the last :meth:`reset`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._reads: dict[str, list[tuple[int, int]]] = {}

    def filesystem(self, inner: pafs.FileSystem) -> pafs.FileSystem:
        """``inner`` with every read logged here."""
        return pafs.PyFileSystem(_Handler(inner, self))

    def record(self, path: str, offset: int, length: int) -> None:
        with self._lock:
            self._reads.setdefault(path, []).append((offset, length))

    def reset(self) -> None:
        with self._lock:
            self._reads.clear()

    def scanned(self, files: Mapping[str, tuple[pq.FileMetaData, int]]) -> tuple[int, int]:
        """(bytes scanned, files read) of the reads so far; ``files`` maps each logged path
        to its footer and size."""
        with self._lock:
            reads = {path: list(ranges) for path, ranges in self._reads.items()}
        total = 0
        opened = 0
        for path, ranges in reads.items():
            known = files.get(path)
            if known is None:
                continue
            metadata, size = known
            opened += 1
            total += chunk_bytes(metadata, ranges, size)
        return total, opened
