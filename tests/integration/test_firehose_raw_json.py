"""Firehose without format conversion: gzip JSON lines in the lake, read by SQL, exactly once.

boto3's Firehose client creates a delivery stream with no DataFormatConversionConfiguration
(the most common Firehose setup) and puts 5 000 records; the sink fleet writes them as
gzip JSON lines under the Prefix, byte for byte, and ``firelake query`` reads them — with
the columns of a Glue table of the same name, or inferred. A JSON-lines sink killed in the
middle of a flush (after its files, before its state) restarts and leaves exactly one line
per event, on a local lake and on S3 (moto).
"""

from __future__ import annotations

import asyncio
import gzip
import json
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.config import Config

from api.backend import AwsOptions
from api.server import IngestThread
from firelake.cli import main as firelake_main
from firelake.config import FirelakeConfig, load_config
from firelake.testing import example_data, example_dict, sample_event, write_config
from queries.engine import QueryEngine
from sinks.destinations import Destination, LocalDestination
from sinks.fleet import run_sink_fleet
from sinks.progress import ProgressStore
from sinks.testing import S3Endpoint, produce_playback, s3, start_sink  # noqa: F401
from streams.topics import delete_topics, ensure_topics

pytestmark = pytest.mark.kafka

EVENTS = 5_000
WAIT_SECONDS = 60.0


@pytest.fixture
def api(kafka_bootstrap: str, lake: Path, suffix: str, tmp_path: Path) -> Iterator[dict[str, Any]]:
    raw = example_dict(kafka_bootstrap, lake, suffix)
    config_file = write_config(tmp_path / "firelake.toml", raw)
    cfg = load_config(config_file, environ={})
    registry_topic = f"_firelake_registry-{suffix}"
    topics = [registry_topic]
    server = IngestThread(cfg, port=0, aws=AwsOptions(registry_topic=registry_topic))
    server.start()
    try:
        yield {
            "server": server,
            "config": cfg,
            "file": config_file,
            "registry": registry_topic,
            "topics": topics,
        }
    finally:
        server.stop()
        delete_topics(kafka_bootstrap, topics)


def client(server: IngestThread, service: str) -> Any:
    return boto3.client(
        service,
        endpoint_url=server.url,
        region_name="eu-north-1",
        aws_access_key_id="AKIDTEST",
        aws_secret_access_key="secret",
        config=Config(retries={"max_attempts": 1, "mode": "standard"}),
    )


def run_fleet(
    config: FirelakeConfig, registry_topic: str, done: threading.Event
) -> threading.Thread:
    """The sink fleet (``firelake sink --all``) in a thread until ``done`` is set."""

    async def fleet() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(run_sink_fleet(config, stop, registry_topic, 0.5))
        while not done.is_set() and not task.done():
            await asyncio.sleep(0.1)
        stop.set()
        await task

    thread = threading.Thread(target=lambda: asyncio.run(fleet()), daemon=True)
    thread.start()
    return thread


def query(config_file: Path, sql: str, capsys: Any) -> str:
    capsys.readouterr()
    assert firelake_main(["query", sql, "--config", str(config_file), "--format", "csv"]) == 0
    return capsys.readouterr().out


@pytest.mark.parametrize("glue", [True, False], ids=["glue-columns", "inferred"])
def test_delivery_without_conversion_writes_gzip_json_lines_read_by_sql(
    api: dict[str, Any], lake: Path, suffix: str, glue: bool, capsys: Any
) -> None:
    firehose, glue_client = client(api["server"], "firehose"), client(api["server"], "glue")
    table = f"rawclicks_{suffix}"
    if glue:
        glue_client.create_table(
            DatabaseName="default",
            TableInput={
                "Name": table,
                "StorageDescriptor": {
                    "Columns": [
                        {"Name": "event_id", "Type": "string"},
                        {"Name": "user_id", "Type": "string"},
                        {"Name": "position_seconds", "Type": "bigint"},
                    ]
                },
            },
        )
    name = f"raw-{suffix}"
    firehose.create_delivery_stream(
        DeliveryStreamName=name,
        DeliveryStreamType="DirectPut",
        ExtendedS3DestinationConfiguration={
            "RoleARN": "arn:aws:iam::000000000000:role/firehose",
            "BucketARN": "arn:aws:s3:::lake",
            "Prefix": f"{table}/",
            "BufferingHints": {"SizeInMBs": 1, "IntervalInSeconds": 1},
            "CompressionFormat": "GZIP",
        },
    )
    api["topics"].append(f"firehose-{name}")
    with pytest.raises(firehose.exceptions.InvalidArgumentException, match="CompressionFormat"):
        firehose.create_delivery_stream(
            DeliveryStreamName=f"zip-{suffix}",
            ExtendedS3DestinationConfiguration={
                "RoleARN": "arn:aws:iam::000000000000:role/firehose",
                "BucketARN": "arn:aws:s3:::lake",
                "Prefix": f"zip_{suffix}/",
                "CompressionFormat": "ZIP",
            },
        )

    done = threading.Event()
    fleet = run_fleet(api["config"], api["registry"], done)
    events = [sample_event(n, "start") for n in range(EVENTS)]
    # Records as producers send them, key order and spacing their own.
    sent = [json.dumps(e, separators=(", ", ": ")).encode() for e in events]
    for start in range(0, EVENTS, 500):
        answer = firehose.put_record_batch(
            DeliveryStreamName=name,
            Records=[{"Data": d + b"\n"} for d in sent[start : start + 500]],
        )
        assert answer["FailedPutCount"] == 0

    def lines() -> list[bytes]:
        out = []
        for path in sorted((lake / table).rglob("*.jsonl.gz")):
            out += gzip.decompress(path.read_bytes()).splitlines()
        return out

    deadline = time.monotonic() + WAIT_SECONDS
    while len(lines()) < EVENTS and time.monotonic() < deadline and fleet.is_alive():
        time.sleep(0.5)
    done.set()
    fleet.join(60)
    assert sorted(lines()) == sorted(sent)  # byte for byte, one a line
    files = list((lake / table).rglob("*.jsonl.gz"))
    assert all(f.parent.name.startswith("hour=") for f in files)
    assert all(f.parent.parent.name.startswith("dt=") for f in files)

    out = query(
        api["file"],
        f"SELECT count(*) AS n, count(DISTINCT event_id) AS d, "
        f"sum(position_seconds) AS s FROM {table}",
        capsys,
    )
    expected = sum(e["position_seconds"] for e in events)
    assert out.splitlines()[1] == f"{EVENTS},{EVENTS},{expected}"
    out = query(api["file"], f"SELECT column_name, column_type FROM (DESCRIBE {table})", capsys)
    types = dict(line.split(",", 1) for line in out.splitlines()[1:] if "," in line)
    assert types["position_seconds"] == "BIGINT"
    # A Glue table decides the columns (Athena's JSON SerDe); otherwise they are inferred.
    assert ("content_id" in types) is not glue
    firehose.delete_delivery_stream(DeliveryStreamName=name)


def json_lines(destination: Destination, table: str) -> list[bytes]:
    out: list[bytes] = []
    for info in destination.list(f"{table}/"):
        if info.key.endswith(".jsonl.gz"):
            out += gzip.decompress(destination.get(info.key) or b"").splitlines()
    return out


@pytest.mark.parametrize("where", ["local", "s3"])
def test_killed_json_sink_leaves_each_event_once(
    kafka_bootstrap: str, lake: Path, suffix: str, tmp_path: Path, where: str, request: Any
) -> None:
    data = example_data()
    sink: dict[str, Any] = {
        "stream": "playback-events",
        "table": "playback",
        "format": "json",
        "max_events": 700,
        "max_seconds": 1,
    }
    destination: Destination = LocalDestination(lake)
    if where == "s3":
        endpoint: S3Endpoint = request.getfixturevalue("s3")
        bucket = f"json-{uuid.uuid4().hex[:12]}"
        destination = endpoint.bucket(bucket)
        sink.update(destination=f"s3://{bucket}", **endpoint.sink_fields())
    data["sinks"] = {"playback": sink}
    raw = example_dict(kafka_bootstrap, lake, suffix, data)
    path = write_config(tmp_path / "firelake.toml", raw)
    config = load_config(path, environ={})
    ensure_topics(config, kafka_bootstrap)
    (name,) = config.sinks
    topic = config.sinks[name].stream
    try:
        last = asyncio.run(produce_playback(kafka_bootstrap, topic, range(EVENTS), 4))
        log = tmp_path / "sink.log"
        # Killed after its second flush's files are in the lake, before their state.
        proc = start_sink(path, name, log, FIRELAKE_SINK_CRASH_AT="after_files:2")
        assert proc.wait(timeout=WAIT_SECONDS) == -signal.SIGKILL, log.read_text()
        assert len(json_lines(destination, "playback")) > 0
        store = ProgressStore(destination, name)
        proc = start_sink(path, name, log)
        try:
            deadline = time.monotonic() + WAIT_SECONDS
            while True:
                states = {p: store.state(topic, p) for p in last}
                if all(s is not None and s.last_offset == last[p] for p, s in states.items()):
                    break
                assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
                time.sleep(0.2)
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                assert proc.wait(timeout=WAIT_SECONDS) == 0, log.read_text()
            except subprocess.TimeoutExpired:
                proc.kill()
                raise
        found = json_lines(destination, "playback")
        ids = [json.loads(line)["event_id"] for line in found]
        assert len(ids) == EVENTS == len(set(ids))
        with QueryEngine(destination) as engine:
            assert engine.query("SELECT count(DISTINCT event_id) FROM playback").rows == [(EVENTS,)]
    finally:
        delete_topics(kafka_bootstrap, config.streams)
