"""DLQ tools behind ``firelake dlq ls | show | redrive``.

``ls`` counts a DLQ stream's records by error type and source stream; ``show`` prints
samples; ``redrive`` sends the original events back to their source stream, like SQS
``StartMessageMoveTask``: all of them, one error type, or a time range, at a bounded rate,
with a progress bar. A redriven event carries its attempts and first attempt time in
headers (``fl-attempts``, ``fl-first-attempt``), so if it fails again it returns to the DLQ
with its attempts incremented.

**Nothing is redriven twice**, even when a redrive is interrupted and rerun, or run again
with another selection: every redriven DLQ record is marked in a ledger topic
(``<dlq>.redriven``, one partition) *in the same Kafka transaction* as the events sent
back. A rerun reads the ledger first and skips what it holds; an interrupted transaction is
aborted and leaves neither events nor marks.
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import TopicPartition

from agents.dlq import HEADER_ATTEMPTS, HEADER_FIRST_ATTEMPT
from firelake.config import FirelakeConfig
from streams.admin import TopicSpec, admin_client, ensure_topic
from streams.envelope import decode
from streams.partitioning import partition_for_key

__all__ = [
    "DeadRecord",
    "RedriveReport",
    "Selection",
    "ledger_topic",
    "read_dlq",
    "redrive",
    "summarize",
]

#: Events per redrive transaction (and per progress-bar update).
CHUNK = 200


@dataclass(frozen=True)
class DeadRecord:
    """One DLQ record and where it sits in the DLQ stream."""

    partition: int
    offset: int
    index: int
    record: dict[str, Any]

    @property
    def mark(self) -> str:
        """The record's identity in the redrive ledger."""
        return f"{self.partition}:{self.offset}:{self.index}"

    def payload(self) -> bytes:
        """The original event bytes."""
        text = self.record.get("payload")
        if text is not None:
            return text.encode("utf-8")
        return base64.b64decode(self.record.get("payload_base64") or "")


@dataclass(frozen=True)
class Selection:
    """Which records to redrive: an error type and/or a failed_at range (canonical text)."""

    error_type: str | None = None
    since: str | None = None
    until: str | None = None

    def __call__(self, record: dict[str, Any]) -> bool:
        if self.error_type and record.get("error_type") != self.error_type:
            return False
        failed_at = str(record.get("failed_at") or "")
        if self.since and failed_at < self.since:
            return False
        return not (self.until and failed_at >= self.until)


@dataclass
class RedriveReport:
    """What a redrive did."""

    redriven: int = 0
    skipped_already: int = 0
    not_selected: int = 0
    seconds: float = 0.0


def ledger_topic(dlq_stream: str) -> str:
    """The topic that records which DLQ records were redriven."""
    return f"{dlq_stream}.redriven"


async def _read_all(bootstrap: str, topic: str, partitions: int) -> list[Any]:
    """Every committed message of a topic up to its end at call time."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, isolation_level="read_committed"
    )
    await consumer.start()
    out: list[Any] = []
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        remaining = {tp for tp in tps if ends[tp] > 0}
        deadline = time.monotonic() + 120
        while remaining and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=500)
            for records in batches.values():
                out.extend(records)
            for tp in list(remaining):
                if await consumer.position(tp) >= ends[tp]:
                    remaining.discard(tp)
    finally:
        await consumer.stop()
    return out


def read_dlq(bootstrap: str, dlq_stream: str, partitions: int) -> list[DeadRecord]:
    """Every committed record of a DLQ stream, in partition and offset order."""
    messages = asyncio.run(_read_all(bootstrap, dlq_stream, partitions))
    found = []
    for message in sorted(messages, key=lambda m: (m.partition, m.offset)):
        envelope = decode(message.value, message.headers, message.key)
        for index, line in enumerate(envelope.lines):
            found.append(DeadRecord(message.partition, message.offset, index, orjson.loads(line)))
    return found


def summarize(records: list[DeadRecord]) -> Counter[tuple[str, str]]:
    """Record counts by (error_type, source_topic)."""
    return Counter(
        (str(r.record.get("error_type")), str(r.record.get("source_topic"))) for r in records
    )


def _ensure_ledger(config: FirelakeConfig, bootstrap: str, topic: str) -> None:
    with admin_client(bootstrap, f"{config.kafka.client_id}-admin") as admin:
        ensure_topic(admin, topic, TopicSpec(1), config.kafka.replication_factor)


def _redriven_marks(bootstrap: str, topic: str) -> set[str]:
    marks: set[str] = set()
    for message in asyncio.run(_read_all(bootstrap, topic, 1)):
        marks.update(orjson.loads(message.value))
    return marks


async def _send(
    bootstrap: str,
    config: FirelakeConfig,
    dlq_stream: str,
    todo: list[DeadRecord],
    rate: float,
    report: RedriveReport,
    progress: Any,
) -> None:
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        transactional_id=f"firelake-redrive-{dlq_stream}",
        enable_idempotence=True,
        acks="all",
    )
    # One transactional id per DLQ: a second redrive of the same DLQ fences the first.
    await producer.start()
    ledger = ledger_topic(dlq_stream)
    started = time.monotonic()
    try:
        # Small rates get small transactions, so an interrupt loses at most ~1 s of work.
        size = max(1, min(CHUNK, int(rate)))
        for start in range(0, len(todo), size):
            chunk = todo[start : start + size]
            async with producer.transaction():
                for item in chunk:
                    record = item.record
                    topic = str(record["source_topic"])
                    key = record.get("source_key")
                    stream = config.streams.get(topic)
                    if key is not None and stream is not None:
                        partition = partition_for_key(key, stream.partitions)
                    else:
                        partition = int(record.get("source_partition") or 0)
                        if stream is not None:
                            partition %= stream.partitions
                    headers = [
                        (HEADER_ATTEMPTS, str(int(record.get("attempts") or 1)).encode()),
                        (
                            HEADER_FIRST_ATTEMPT,
                            str(record.get("first_attempt_at") or record["failed_at"]).encode(),
                        ),
                    ]
                    await producer.send(
                        topic,
                        item.payload(),
                        key=key.encode("utf-8") if key is not None else None,
                        partition=partition,
                        headers=headers,
                    )
                await producer.send(ledger, orjson.dumps([i.mark for i in chunk]), partition=0)
            report.redriven += len(chunk)
            if progress is not None:
                progress.update(len(chunk))
            # Bounded rate: never ahead of `rate` events per second on average.
            ahead = report.redriven / rate - (time.monotonic() - started)
            if ahead > 0:
                await asyncio.sleep(ahead)
    finally:
        await producer.stop()


def redrive(
    config: FirelakeConfig,
    bootstrap: str,
    dlq_stream: str,
    selection: Selection,
    *,
    rate: float = 1000.0,
    show_progress: bool = True,
) -> RedriveReport:
    """Send the selected DLQ records' events back to their source streams, once each."""
    if rate <= 0:
        raise ValueError(f"rate must be > 0 events/s, got {rate}")
    started = time.monotonic()
    ledger = ledger_topic(dlq_stream)
    _ensure_ledger(config, bootstrap, ledger)
    done = _redriven_marks(bootstrap, ledger)
    report = RedriveReport()
    todo = []
    for item in read_dlq(bootstrap, dlq_stream, config.streams[dlq_stream].partitions):
        if not selection(item.record):
            report.not_selected += 1
        elif item.mark in done or item.record.get("source_index", 0) < 0:
            # Whole-message failures (index -1) are not single events: not redriven.
            report.skipped_already += item.mark in done
        else:
            todo.append(item)
    progress = None
    if show_progress and todo:
        from tqdm import tqdm

        progress = tqdm(total=len(todo), unit="event", desc=f"redrive {dlq_stream}")
    try:
        asyncio.run(_send(bootstrap, config, dlq_stream, todo, rate, report, progress))
    finally:
        if progress is not None:
            progress.close()
    report.seconds = time.monotonic() - started
    return report
