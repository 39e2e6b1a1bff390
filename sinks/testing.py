"""Test helpers for sinks: a real S3 endpoint on loopback, destinations, sink processes.

Tests never mock S3: :func:`s3_server` starts ``moto.server.ThreadedMotoServer`` on
127.0.0.1 (a free port), so boto3 and pyarrow talk HTTP to it exactly as to AWS or MinIO.
The pytest fixtures ``s3`` (one server per module) and ``dest`` (each test twice: a local
folder and a fresh bucket) are imported by the test modules that use them.
:func:`playback_sink` writes a configuration with one playback sink; :func:`start_sink`
runs ``python -m sinks.sink`` as a real process for crash tests.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest

from firelake.broker import free_port
from firelake.config import FirelakeConfig, load_config
from firelake.testing import example_data, example_dict, write_config
from sinks.destinations import Destination, LocalDestination, S3Destination, S3Settings

__all__ = [
    "REPO",
    "S3Endpoint",
    "dest",
    "playback_sink",
    "produce_playback",
    "s3",
    "s3_server",
    "sink_until_flushed",
    "start_sink",
    "stop_sink",
]

#: The repository root (what ``python -m sinks.sink`` needs on its path).
REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class S3Endpoint:
    """A running S3 endpoint and the settings (fake credentials) that reach it."""

    url: str
    settings: S3Settings

    def sink_fields(self) -> dict[str, str]:
        """The ``[sinks.<name>]`` keys that point a sink at this endpoint."""
        return {
            "s3_endpoint_url": self.url,
            "s3_region": self.settings.region,
            "s3_access_key_id": self.settings.access_key_id,
            "s3_secret_access_key": self.settings.secret_access_key,
        }

    def bucket(self, name: str) -> S3Destination:
        """Create a bucket and return a destination at its root."""
        destination = S3Destination(f"s3://{name}", self.settings)
        destination.client.create_bucket(Bucket=name)
        return destination


@contextlib.contextmanager
def s3_server() -> Iterator[S3Endpoint]:
    """Run a moto S3 server on 127.0.0.1 for the duration of the block."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    # boto3 would otherwise look for real credentials and a config file.
    os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")
    try:
        yield S3Endpoint(
            f"http://127.0.0.1:{port}",
            S3Settings(f"http://127.0.0.1:{port}", "us-east-1", "testing", "testing"),
        )
    finally:
        server.stop()


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Endpoint]:
    """A moto S3 server for the tests of one module."""
    with s3_server() as endpoint:
        yield endpoint


@pytest.fixture(params=["local", "s3"])
def dest(request: pytest.FixtureRequest, tmp_path: Path) -> Destination:
    """Each test twice: on a local folder, and on a fresh bucket of the module's S3 server."""
    if request.param == "local":
        return LocalDestination(tmp_path / "lake")
    endpoint: S3Endpoint = request.getfixturevalue("s3")
    return endpoint.bucket(f"test-{uuid.uuid4().hex[:12]}")


def start_sink(config_path: Path, sink: str, log: Path, **env: str) -> subprocess.Popen:
    """``python -m sinks.sink`` for one sink as a real process, stderr appended to ``log``.

    ``env`` adds variables (``FIRELAKE_SINK_CRASH_AT``, ``FIRELAKE_SINK_INSTANCE_ID``);
    inherited ones that would change the run (lake override, crash hook) are dropped.
    """
    variables = {**os.environ, "PYTHONPATH": str(REPO)}
    for name in ("FIRELAKE_LAKE", "FIRELAKE_SINK_CRASH_AT", "FIRELAKE_SINK_INSTANCE_ID"):
        variables.pop(name, None)
    variables.update(env)
    with log.open("ab") as stderr:
        return subprocess.Popen(
            [sys.executable, "-m", "sinks.sink", "--config", str(config_path), "--sink", sink],
            cwd=REPO,
            env=variables,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )


def stop_sink(proc: subprocess.Popen, log: Path, timeout_s: float = 30.0) -> None:
    """SIGTERM a sink process and check it flushed and exited cleanly (killed if it hangs)."""
    proc.send_signal(signal.SIGTERM)
    try:
        assert proc.wait(timeout=timeout_s) == 0, log.read_text()
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)
        raise


def playback_sink(
    bootstrap: str, folder: Path, suffix: str, **sink: object
) -> tuple[Path, FirelakeConfig]:
    """``folder/firelake.toml``: the example with one sink, playback-events -> playback.

    The lake is ``folder/lake``; names carry ``suffix``; ``sink`` adds or overrides keys of
    the ``[sinks.playback]`` table. Returns the file and its parsed configuration.
    """
    data = example_data()
    data["sinks"] = {"playback": {"stream": "playback-events", "table": "playback", **sink}}
    raw = example_dict(bootstrap, folder / "lake", suffix, data)
    path = write_config(folder / "firelake.toml", raw)
    return path, load_config(path, environ={})


async def produce_playback(
    bootstrap: str,
    topic: str,
    numbers: range,
    partitions: int,
    event: Callable[[int], dict[str, Any]] | None = None,
) -> dict[int, int]:
    """Playback events ``numbers`` (``event(n)``, default ``sample_event(n, "start")``) as
    envelopes of 50 on their keys' partitions; returns each partition's last offset."""
    from aiokafka import AIOKafkaProducer

    from firelake.testing import sample_event
    from streams.envelope import encode
    from streams.partitioning import partition_for_key

    make = event or (lambda n: sample_event(n, "start"))
    lines: dict[int, list[tuple[str, bytes]]] = {}
    for n in numbers:
        record = make(n)
        key = record["user_id"]
        lines.setdefault(partition_for_key(key, partitions), []).append((key, orjson.dumps(record)))
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
    await producer.start()
    last: dict[int, int] = {}
    try:
        for partition, items in lines.items():
            for start in range(0, len(items), 50):
                chunk = items[start : start + 50]
                value, headers = encode([v for _, v in chunk], [k for k, _ in chunk], 1, 2)
                sent = await producer.send_and_wait(
                    topic, value, partition=partition, headers=headers
                )
                last[partition] = sent.offset
    finally:
        await producer.stop()
    return last


async def sink_until_flushed(
    config: FirelakeConfig, name: str, expected: int, wait_s: float = 30.0
) -> None:
    """Run sink ``name`` in this process until it flushed ``expected`` rows and bad lines,
    then stop it (fails after ``wait_s``)."""
    import asyncio
    import time

    from sinks.sink import ParquetSink

    sink = ParquetSink(config, name)
    stop = asyncio.Event()
    task = asyncio.create_task(sink.run(stop))
    try:
        deadline = time.monotonic() + wait_s
        while sink.stats.rows + sink.stats.bad_lines < expected:
            assert time.monotonic() < deadline and not task.done(), sink.stats
            await asyncio.sleep(0.1)
    finally:
        stop.set()
        await asyncio.wait_for(task, wait_s)
