"""Steady, bounded client load on the native ingest, and counting the lake: for chaos tests.

Not a test module: ``test_chaos`` and ``test_cluster`` import it. A client sends steady
load and retries every record the ingest did not accept (a per-record failure, a refused
request, a refused connection), with the same event id and partition key, as a Kinesis
client does; its books say what was accepted and which answers came late.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import duckdb
import orjson

from firelake.testing import sample_event

__all__ = [
    "Load",
    "assert_lake_exactly_once",
    "lake_ids",
    "post_records",
    "send_load",
    "wait_progress",
]


@dataclass
class Load:
    """The client's books: what was accepted, what waits for a retry, how answers went.

    ``deadline_s`` is the ingest's answer deadline; an answer later than it plus
    ``slack_s`` (scheduling on a loaded box, the round trip) counts as late.
    """

    prefix: str
    deadline_s: float = 5.0
    slack_s: float = 3.0
    records_per_request: int = 20
    requests_per_second: float = 8.0
    accepted: set[str] = field(default_factory=set)
    retry: list[dict[str, Any]] = field(default_factory=list)
    failed_then_retried: set[str] = field(default_factory=set)
    answers: Counter[str] = field(default_factory=Counter)
    late: list[float] = field(default_factory=list)
    slowest: float = 0.0
    sent_new: int = 0
    new_records: bool = True
    stop: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)

    def next_batch(self) -> list[dict[str, Any]]:
        with self.lock:
            batch = self.retry[: self.records_per_request]
            del self.retry[: len(batch)]
            while self.new_records and len(batch) < self.records_per_request:
                n = self.sent_new
                self.sent_new += 1
                event = sample_event(n)
                event["event_id"] = f"{self.prefix}-{n}"
                batch.append({"data": event, "partition_key": event["user_id"]})
            return batch

    def failed(self, records: list[dict[str, Any]]) -> None:
        with self.lock:
            self.retry.extend(records)
            self.failed_then_retried.update(r["data"]["event_id"] for r in records)

    @property
    def settled(self) -> bool:
        with self.lock:
            return not self.retry and not self.new_records


async def post_records(session: aiohttp.ClientSession, url: str, load: Load) -> None:
    batch = load.next_batch()
    if not batch:
        return
    started = time.monotonic()
    try:
        async with session.post(
            url,
            data=orjson.dumps({"records": batch}),
            headers={"Content-Type": "application/json"},
            timeout=aiohttp.ClientTimeout(total=load.deadline_s + load.slack_s + 10),
        ) as answer:
            body = await answer.json()
            status = answer.status
    except aiohttp.ClientConnectorError:
        load.answers["connection refused (ingest down)"] += 1
        load.failed(batch)
        return
    except (aiohttp.ClientOSError, aiohttp.ServerDisconnectedError):
        # The ingest was SIGKILLed with this request in flight: no answer can come.
        load.answers["connection lost (ingest killed)"] += 1
        load.failed(batch)
        return
    except (TimeoutError, aiohttp.ClientError) as exc:
        load.answers[f"no answer: {type(exc).__name__}"] += 1
        load.late.append(time.monotonic() - started)
        load.failed(batch)
        return
    took = time.monotonic() - started
    load.slowest = max(load.slowest, took)
    if took > load.deadline_s + load.slack_s:
        load.late.append(took)
    load.answers[str(status)] += 1
    if status != 200:
        load.failed(batch)
        return
    again = [r for r, result in zip(batch, body["records"], strict=True) if "error_code" in result]
    if again:
        load.answers["200 with failed records"] += 1
        load.failed(again)
    with load.lock:
        load.accepted.update(
            r["data"]["event_id"]
            for r, result in zip(batch, body["records"], strict=True)
            if "error_code" not in result
        )


async def send_load(url: str, load: Load) -> None:
    """Steady load: ``load.requests_per_second`` requests a second, each on its own task."""
    tasks: set[asyncio.Task[None]] = set()
    async with aiohttp.ClientSession() as session:
        while not load.stop:
            task = asyncio.create_task(post_records(session, url, load))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            await asyncio.sleep(1 / load.requests_per_second)
        await asyncio.gather(*tasks, return_exceptions=True)


def lake_ids(lake: Path, tables: list[str]) -> Counter[str]:
    found: Counter[str] = Counter()
    for table in tables:
        files = [str(f) for f in (lake / table).rglob("*.parquet") if not f.name.startswith(".")]
        if not files:
            continue
        rows = duckdb.sql(
            "SELECT event_id, count(*) FROM read_parquet($files, union_by_name=true) GROUP BY 1",
            params={"files": files},
        ).fetchall()
        for event_id, count in rows:
            found[event_id] += count
    return found


def wait_progress(load: Load, seconds: float, what: str) -> None:
    """Wait until the ingest accepts records again after a blow."""
    with load.lock:
        before = len(load.accepted)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with load.lock:
            if len(load.accepted) > before + 100:
                return
        time.sleep(0.5)
    raise AssertionError(f"no records accepted within {seconds:.0f} s after {what}: {load}")


def assert_lake_exactly_once(
    load: Load, lake: Path, tables: list[str], seconds: float = 120.0
) -> Counter[str]:
    """Wait (bounded) for the lake to hold what ``load`` got accepted, then assert it holds
    exactly one row per accepted record and nothing else; return the rows per event id."""
    deadline = time.monotonic() + seconds
    found = lake_ids(lake, tables)
    while set(found) != load.accepted and time.monotonic() < deadline:
        time.sleep(2)
        found = lake_ids(lake, tables)
    missing = load.accepted - set(found)
    extra = set(found) - load.accepted
    doubled = {k: v for k, v in found.items() if v > 1}
    assert not missing and not extra and not doubled, (
        f"missing {len(missing)}, extra {len(extra)}, doubled {len(doubled)} "
        f"{list(doubled.items())[:5]}; answers {dict(load.answers)}"
    )
    return found
