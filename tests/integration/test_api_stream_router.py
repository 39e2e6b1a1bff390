"""A stream created through the Kinesis API is a Firelake stream: a router runs on it.

The stream exists only in the registry (boto3 ``CreateStream``), not in firelake.toml; the
router's configuration names it as its source, and ``firelake router`` finds it there.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import boto3
import pytest

from api.server import IngestThread
from firelake.config import load_config
from firelake.testing import example_dict, sample_event, write_config
from streams.topics import delete_topics
from tests.integration.routerkit import read_committed

pytestmark = pytest.mark.kafka


def test_a_router_runs_on_a_stream_created_through_the_kinesis_api(
    kafka_bootstrap: str, tmp_path: Path, lake: Path, suffix: str
) -> None:
    data = example_dict(kafka_bootstrap, lake, suffix)
    api_stream = f"orders-{suffix}"
    router_name = f"clickstream-{suffix}"
    ingest_config = load_config(write_config(tmp_path / "ingest.toml", data), environ={})
    # The router reads the API's stream, which the file does not declare.
    data["routers"][router_name]["source"] = api_stream
    config_file = write_config(tmp_path / "firelake.toml", data)
    with pytest.raises(Exception, match="unknown stream"):
        load_config(config_file, environ={})  # the file alone is refused

    router = None
    try:
        with IngestThread(ingest_config, port=0) as server:
            kinesis = boto3.client(
                "kinesis",
                endpoint_url=server.url,
                region_name="eu-north-1",
                aws_access_key_id="AKIDTEST",
                aws_secret_access_key="secret",
            )
            kinesis.create_stream(StreamName=api_stream, ShardCount=2)
            log = (tmp_path / "router.log").open("w")
            router = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "firelake.cli",
                    "router",
                    "--name",
                    router_name,
                    "--config",
                    str(config_file),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "FIRELAKE_KAFKA_BOOTSTRAP": kafka_bootstrap},
            )
            events = [sample_event(n, "page_view") for n in range(40)]
            answer = kinesis.put_records(
                StreamName=api_stream,
                Records=[
                    {"Data": json.dumps(e).encode(), "PartitionKey": e["user_id"]} for e in events
                ],
            )
            assert answer["FailedRecordCount"] == 0
        page_stream = f"page-events-{suffix}"
        got = asyncio.run(
            read_committed(kafka_bootstrap, {page_stream: 4}, 40, time.monotonic() + 60)
        )
        routed = sorted(event["event_id"] for _, event, _ in got[page_stream])
        assert routed == sorted(e["event_id"] for e in events), (
            tmp_path / "router.log"
        ).read_text()[-3000:]
    finally:
        if router is not None:
            router.send_signal(signal.SIGTERM)
            router.wait(timeout=30)
        delete_topics(kafka_bootstrap, [*ingest_config.streams, api_stream])
