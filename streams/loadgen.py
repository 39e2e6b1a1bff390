"""A load generator: realistic Yle clickstream events posted to the ingest service.

:class:`EventGenerator` simulates a bounded pool of live user sessions. Each session has a
user, a device and platform, a product and a language, and moves through a small state
machine: browsing (``page_view`` and ``click``), then perhaps playback (``start`` →
``heartbeat`` every 30 s of position → ``pause`` / resume with ``start`` → ``stop``), then
browsing again until the session ends and a new one takes its place. Popular content and
returning users are drawn from skewed distributions, as real traffic is. With a seed and a
fixed clock the events are reproducible. ``invalid_ratio`` mixes in bad events of the kinds
in :data:`INVALID_KINDS`, for DLQ demos.

:func:`send` posts batches of those events to ``POST /v1/streams/{stream}/records`` with
aiohttp at a target rate (token-bucket pacing), with at most ``concurrency`` requests in
flight, until ``count`` events are sent or ``duration`` seconds have passed, and returns a
:class:`SendReport`. The partition key of every record is its session's user id.
"""

from __future__ import annotations

import asyncio
import math
import random
import re
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import aiohttp
import orjson
from tqdm import tqdm

__all__ = [
    "INVALID_KINDS",
    "MAX_BATCH_RECORDS",
    "PAGE_TYPES",
    "PLAYBACK_TYPES",
    "EventGenerator",
    "Record",
    "SendReport",
    "TokenBucket",
    "batch_sizes",
    "send",
    "send_shaped",
]

#: Kinesis PutRecords: at most 500 records a request.
MAX_BATCH_RECORDS = 500
#: Most requests in flight at once.
MAX_CONCURRENCY = 64
#: A batch never holds more than this many seconds' worth of events at the target rate, so
#: low rates are paced smoothly instead of in one large request every few seconds.
BATCH_WINDOW_S = 0.1
#: Event types of the playback and page schemas of the example configuration.
PLAYBACK_TYPES = ("start", "heartbeat", "pause", "stop")
PAGE_TYPES = ("page_view", "click")
#: Kinds of bad event ``invalid_ratio`` mixes in.
INVALID_KINDS = ("missing_field", "wrong_type", "unknown_event_type", "not_object")
#: Distinct error codes a report counts separately; the rest count as "other".
_MAX_ERROR_CODES = 20
_MAX_ERROR_SAMPLES = 5

_DEVICES = (("mobile", 50), ("desktop", 25), ("tv", 15), ("tablet", 10))
_PLATFORMS = {
    "mobile": (("android", 55), ("ios", 45)),
    "desktop": (("web", 100),),
    "tv": (("smarttv", 50), ("androidtv", 30), ("appletv", 20)),
    "tablet": (("ios", 60), ("android", 30), ("web", 10)),
}
_PRODUCTS = (("areena", 55), ("uutiset", 30), ("urheilu", 15))
_LANGUAGES = (("fi", 86), ("sv", 10), ("en", 3), ("se", 1))
_CONTENT_TYPES = {
    "areena": (("episode", 60), ("clip", 15), ("live", 15), ("podcast", 10)),
    "uutiset": (("clip", 70), ("live", 30)),
    "urheilu": (("live", 60), ("clip", 40)),
}
_DURATIONS = {"episode": (1200, 3600), "clip": (45, 600), "podcast": (1500, 3600)}
_BITRATES = {
    "mobile": (800, 1600, 2400),
    "tablet": (1600, 2400, 3200),
    "desktop": (2400, 3200, 4800),
    "tv": (3200, 4800, 8000),
}
_HOSTS = {"areena": "areena.yle.fi", "uutiset": "yle.fi", "urheilu": "yle.fi"}
_SECTIONS = {
    "areena": ("/", "/tv", "/podcastit", "/tv/opas", "/tv/lapset", "/haku"),
    "uutiset": ("/uutiset", "/uutiset/tuoreimmat", "/uutiset/kotimaa", "/uutiset/ulkomaat"),
    "urheilu": ("/urheilu", "/urheilu/tulokset", "/urheilu/jaakiekko", "/urheilu/jalkapallo"),
}
_EXTERNAL_REFERRERS = (
    ("", 40),
    ("https://www.google.com/", 35),
    ("https://www.facebook.com/", 10),
    ("https://yle.fi/", 10),
    ("https://t.co/", 5),
)
_HEARTBEAT_S = 30


def _weighted(rng: random.Random, options: tuple[tuple[str, int], ...]) -> str:
    """One value of (value, weight) options."""
    return rng.choices([o[0] for o in options], [o[1] for o in options])[0]


def _skewed(rng: random.Random, size: int, power: float) -> int:
    """An index in [0, size) where small indexes are likelier: ``power`` 1 is uniform.

    With power 4 the top 1% of indexes draw about a third of the picks (popular content);
    with power 2 about a tenth (heavy users).
    """
    return min(int(size * rng.random() ** power), size - 1)


@dataclass(frozen=True, slots=True)
class Record:
    """One PutRecords record: the event, its partition key and, if bad, what is wrong."""

    data: Any
    partition_key: str
    invalid: str | None = None


@dataclass(slots=True)
class _Session:
    """A live user session moving through browsing and playback."""

    user_id: str
    device: str
    platform: str
    product: str
    language: str
    events_left: int
    state: str = "browsing"  # browsing | playing | paused
    page: str = ""
    content_id: str = ""
    content_type: str = ""
    duration: int = 0  # 0: live, no end
    position: int = 0
    bitrate: int = 0


class EventGenerator:
    """Realistic Yle clickstream events from a bounded pool of simulated sessions.

    ``seed`` makes the sequence reproducible (with a fixed ``now``); ``users`` bounds the
    user population, ``sessions`` the sessions alive at once; ``now`` gives the current
    UTC time (event times are now minus a small device-to-collector lag).
    """

    def __init__(
        self,
        seed: int | None = None,
        invalid_ratio: float = 0.0,
        users: int = 100_000,
        sessions: int = 500,
        contents: int = 20_000,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        if not 0.0 <= invalid_ratio <= 1.0:
            raise ValueError(f"invalid_ratio must be between 0 and 1, got {invalid_ratio}")
        for name, value in (("users", users), ("sessions", sessions), ("contents", contents)):
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        self.rng = random.Random(seed)
        self.invalid_ratio = invalid_ratio
        self.users = users
        self.contents = contents
        self.now = now
        self._sessions = [self._new_session() for _ in range(sessions)]

    # ------------------------------------------------------------------ sessions

    def _new_session(self) -> _Session:
        rng = self.rng
        device = _weighted(rng, _DEVICES)
        return _Session(
            user_id=f"user-{_skewed(rng, self.users, 2):06d}",
            device=device,
            platform=_weighted(rng, _PLATFORMS[device]),
            product=_weighted(rng, _PRODUCTS),
            language=_weighted(rng, _LANGUAGES),
            # Geometric session length: many short visits, a few long viewing sessions.
            events_left=1 + int(rng.expovariate(1 / 25)),
        )

    def _event_id(self) -> str:
        return uuid.UUID(int=self.rng.getrandbits(128), version=4).hex

    def _base(self, session: _Session, event_type: str) -> dict[str, Any]:
        # Devices buffer and retry: event times trail the collector by a skewed lag.
        lag = min(self.rng.expovariate(1 / 0.8), 30.0)
        when = self.now() - timedelta(seconds=lag)
        return {
            "event_id": self._event_id(),
            "event_type": event_type,
            "event_time": when.astimezone(UTC).isoformat(timespec="milliseconds")[:-6] + "Z",
            "user_id": session.user_id,
            "device": session.device,
            "platform": session.platform,
            "product": session.product,
            "language": session.language,
        }

    def _page_event(self, session: _Session, event_type: str) -> dict[str, Any]:
        rng = self.rng
        host = _HOSTS[session.product]
        referrer = (
            f"https://{host}{session.page}" if session.page else _weighted(rng, _EXTERNAL_REFERRERS)
        )
        if session.product == "areena" and rng.random() < 0.5:
            page = f"/1-{5_000_000 + _skewed(rng, self.contents, 4)}"
        elif session.product != "areena" and rng.random() < 0.6:
            page = f"/a/74-{20_000_000 + _skewed(rng, self.contents, 4)}"
        else:
            page = rng.choice(_SECTIONS[session.product])
        event = self._base(session, event_type)
        event["page"] = page
        event["referrer"] = referrer
        session.page = page
        return event

    def _playback_event(self, session: _Session, event_type: str) -> dict[str, Any]:
        event = self._base(session, event_type)
        event["content_id"] = session.content_id
        event["content_type"] = session.content_type
        event["position_seconds"] = session.position
        event["bitrate_kbps"] = session.bitrate
        return event

    def _start_playback(self, session: _Session) -> dict[str, Any]:
        rng = self.rng
        session.content_type = _weighted(rng, _CONTENT_TYPES[session.product])
        session.content_id = f"1-{5_000_000 + _skewed(rng, self.contents, 4)}"
        low_high = _DURATIONS.get(session.content_type)
        session.duration = rng.randint(*low_high) if low_high else 0
        session.position = 0
        session.bitrate = (
            128 if session.content_type == "podcast" else rng.choice(_BITRATES[session.device])
        )
        session.state = "playing"
        return self._playback_event(session, "start")

    def _step(self, session: _Session) -> dict[str, Any]:
        """The session's next event, advancing its state."""
        rng = self.rng
        roll = rng.random()
        if session.state == "playing":
            ended = session.duration and session.position + _HEARTBEAT_S >= session.duration
            if ended or session.events_left <= 1 or roll < 0.04:
                if ended:
                    session.position = session.duration
                session.state = "browsing"
                return self._playback_event(session, "stop")
            if roll < 0.10:
                session.state = "paused"
                return self._playback_event(session, "pause")
            session.position += _HEARTBEAT_S
            return self._playback_event(session, "heartbeat")
        if session.state == "paused":
            if session.events_left <= 1 or roll < 0.3:
                session.state = "browsing"
                return self._playback_event(session, "stop")
            session.state = "playing"
            return self._playback_event(session, "start")
        wants_video = 0.45 if session.product == "areena" else 0.12
        if session.page and roll < wants_video:
            return self._start_playback(session)
        if session.page and roll < wants_video + 0.2:
            return self._page_event(session, "click")
        return self._page_event(session, "page_view")

    # ------------------------------------------------------------------ records

    def _invalid(self, event: dict[str, Any]) -> tuple[Any, str]:
        """Spoil a valid event in one of the :data:`INVALID_KINDS` ways."""
        rng = self.rng
        kind = rng.choice(INVALID_KINDS)
        if kind == "missing_field":
            second = "page" if "page" in event else "content_id"
            # Not event_id: the router gives an event without one a stable id (enrichment).
            del event[rng.choice(("event_time", "user_id", second))]
        elif kind == "wrong_type":
            if "position_seconds" in event:
                event["position_seconds"] = f"{event['position_seconds']}s"
            else:
                event["page"] = [event["page"]]
        elif kind == "unknown_event_type":
            event["event_type"] = rng.choice(("seek", "ad_impression", "rewind", "START"))
        else:
            # Classic producer bugs: a double-encoded event, a list of events, a number.
            choice = rng.randrange(3)
            data: Any = (orjson.dumps(event).decode(), [event], 42)[choice]
            return data, kind
        return event, kind

    def record(self) -> Record:
        """The next record from a random live session."""
        index = self.rng.randrange(len(self._sessions))
        session = self._sessions[index]
        event = self._step(session)
        session.events_left -= 1
        if session.events_left <= 0 and session.state == "browsing":
            self._sessions[index] = self._new_session()
        if self.invalid_ratio and self.rng.random() < self.invalid_ratio:
            data, kind = self._invalid(event)
            return Record(data, session.user_id, kind)
        return Record(event, session.user_id)

    def records(self, n: int) -> list[Record]:
        """The next ``n`` records."""
        return [self.record() for _ in range(n)]


# ---------------------------------------------------------------------- pacing


class TokenBucket:
    """Token-bucket pacing: ``rate`` tokens a second, at most ``burst`` saved up.

    :meth:`reserve` takes tokens at once, going into debt when there are too few, and
    says how long to wait before using them; so the long-run rate never exceeds ``rate``,
    and a sender that fell behind catches up by at most ``burst``.
    """

    def __init__(
        self, rate: float, burst: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if not (rate > 0 and math.isfinite(rate)):
            raise ValueError(f"rate must be a positive finite number, got {rate}")
        if not burst > 0:
            raise ValueError(f"burst must be positive, got {burst}")
        self.rate = rate
        self.burst = burst
        self.clock = clock
        # Start empty: the first batch waits its share, so the average rate holds from t=0.
        self.tokens = 0.0
        self.last = clock()

    def reserve(self, n: float) -> float:
        """Take ``n`` tokens; seconds to wait before the tokens are really there (>= 0)."""
        now = self.clock()
        self.tokens = min(self.burst, self.tokens + (now - self.last) * self.rate)
        self.last = now
        self.tokens -= n
        return 0.0 if self.tokens >= 0 else -self.tokens / self.rate


def batch_sizes(count: int, rate: float, batch_size: int) -> list[int]:
    """How ``count`` events split into requests: at most ``batch_size`` and 0.1 s of events."""
    per_batch = max(1, min(batch_size, math.ceil(rate * BATCH_WINDOW_S)))
    full, rest = divmod(count, per_batch)
    return [per_batch] * full + ([rest] if rest else [])


# ---------------------------------------------------------------------- sending


@dataclass
class SendReport:
    """What a load run did.

    ``sent`` counts events posted; ``accepted`` and ``failed`` the per-record results of
    answered requests; ``rejected_events`` the events of requests refused whole (4xx/5xx,
    connection errors, timeouts), of which there were ``rejected_requests``.
    """

    url: str
    stream: str
    sent: int = 0
    accepted: int = 0
    failed: int = 0
    rejected_events: int = 0
    requests: int = 0
    rejected_requests: int = 0
    invalid: int = 0
    elapsed: float = 0.0
    errors: Counter[str] = field(default_factory=Counter)
    samples: list[str] = field(default_factory=list)
    #: Shaped runs (:func:`send_shaped`): answers of 503 honoured after their Retry-After,
    #: records resent after a per-record throttle, and the events the shape asked for.
    throttled_requests: int = 0
    resent: int = 0
    target: int = 0

    @property
    def rate(self) -> float:
        """Events sent per second over the run."""
        return self.sent / self.elapsed if self.elapsed > 0 else 0.0

    def reject(self, code: str, message: str, events: int) -> None:
        """Count a request refused whole (none of its ``events`` was taken)."""
        self.rejected_requests += 1
        self.rejected_events += events
        self.note_error(code, message, events)

    def note_error(self, code: str, message: str, events: int = 1) -> None:
        """Count an error code (bounded distinct codes) and keep the first few messages."""
        key = code if code in self.errors or len(self.errors) < _MAX_ERROR_CODES else "other"
        self.errors[key] += events
        if len(self.samples) < _MAX_ERROR_SAMPLES:
            self.samples.append(f"{code}: {message}")

    def __str__(self) -> str:
        lines = [
            f"sent {self.sent} events to {self.stream} in {self.elapsed:.2f} s "
            f"({self.rate:,.0f} events/s) in {self.requests} requests",
            f"accepted {self.accepted}, failed {self.failed}, rejected {self.rejected_events} "
            f"({self.rejected_requests} requests refused); {self.invalid} were invalid on purpose",
        ]
        if self.target:
            lines.append(
                f"the shape asked for {self.target} events; the ingest throttled "
                f"{self.throttled_requests} requests (503, retried after Retry-After) and "
                f"{self.resent} records (resent)"
            )
        if self.errors:
            lines.append(
                "errors: " + ", ".join(f"{code} x{n}" for code, n in self.errors.most_common())
            )
        lines += [f"  {sample}" for sample in self.samples]
        return "\n".join(lines)


def _check_args(
    rate: float, count: int, duration: float, batch_size: int, concurrency: int
) -> None:
    if not (rate > 0 and math.isfinite(rate)):
        raise ValueError(f"rate must be a positive finite number of events/s, got {rate}")
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ValueError(f"count must be a positive integer, got {count!r}")
    if not (duration > 0 and math.isfinite(duration)):
        raise ValueError(f"duration must be a positive finite number of seconds, got {duration}")
    if not 1 <= batch_size <= MAX_BATCH_RECORDS:
        raise ValueError(f"batch_size must be 1 to {MAX_BATCH_RECORDS}, got {batch_size}")
    if not 1 <= concurrency <= MAX_CONCURRENCY:
        raise ValueError(f"concurrency must be 1 to {MAX_CONCURRENCY}, got {concurrency}")


def _json_or_none(payload: bytes) -> Any:
    """An answer's JSON, or None when it is not JSON."""
    try:
        return orjson.loads(payload)
    except orjson.JSONDecodeError:
        return None


def _results(answer: Any, n: int) -> list[Any] | None:
    """The per-record results of a 200 answer to ``n`` records, or None when the answer
    does not hold exactly that many (not the ingest, or a bug: counted, never trusted)."""
    results = answer.get("records") if isinstance(answer, dict) else None
    return results if isinstance(results, list) and len(results) == n else None


async def _post(
    session: aiohttp.ClientSession,
    endpoint: str,
    batch: list[Record],
    report: SendReport,
) -> None:
    """Post one batch and add its outcome to the report."""
    body = orjson.dumps(
        {"records": [{"data": r.data, "partition_key": r.partition_key} for r in batch]}
    )
    n = len(batch)
    report.requests += 1
    report.sent += n
    try:
        async with session.post(
            endpoint, data=body, headers={"content-type": "application/json"}
        ) as response:
            payload = await response.read()
            status = response.status
    except (aiohttp.ClientError, TimeoutError) as exc:
        report.reject(type(exc).__name__, str(exc) or repr(exc), n)
        return
    answer = _json_or_none(payload)
    if status != 200:
        error = answer.get("error") if isinstance(answer, dict) else None
        if isinstance(error, dict):
            report.reject(str(error.get("code")), str(error.get("message")), n)
        else:
            report.reject(f"HTTP {status}", payload[:200].decode("utf-8", "replace"), n)
        return
    results = _results(answer, n)
    if results is None:
        report.reject("BadResponse", f"expected {n} results: {payload[:200]!r}", n)
        return
    for result in results:
        if isinstance(result, dict) and "error_code" in result:
            report.failed += 1
            report.note_error(str(result["error_code"]), str(result.get("error_message")))
        else:
            report.accepted += 1


async def send(
    url: str,
    stream: str,
    rate: float,
    count: int,
    duration: float,
    batch_size: int = MAX_BATCH_RECORDS,
    concurrency: int = 4,
    invalid_ratio: float = 0.0,
    seed: int | None = None,
    show_progress: bool = False,
    timeout: float = 30.0,
) -> SendReport:
    """Post generated events to the ingest service at ``url`` and report what happened.

    Sends ``rate`` events a second until ``count`` events are sent or ``duration`` seconds
    have passed, whichever comes first (both must be finite); requests hold at most
    ``batch_size`` records, at most ``concurrency`` are in flight, each may take ``timeout``
    seconds. Requests in flight when the duration ends are finished, not abandoned.
    """
    _check_args(rate, count, duration, batch_size, concurrency)
    generator = EventGenerator(seed=seed, invalid_ratio=invalid_ratio)
    endpoint = f"{url.rstrip('/')}/v1/streams/{quote(stream, safe='')}/records"
    report = SendReport(url=url, stream=stream)
    # Bounded hand-off: when the service is slower than the rate, the pacer waits here.
    queue: asyncio.Queue[list[Record] | None] = asyncio.Queue(maxsize=concurrency)
    sizes = batch_sizes(count, rate, batch_size)
    bucket = TokenBucket(rate, burst=max(sizes))
    started = time.monotonic()
    deadline = started + duration
    progress = tqdm(total=count, unit="ev", disable=not show_progress, leave=False)

    async def pace() -> None:
        for size in sizes:
            wait = bucket.reserve(size)
            if time.monotonic() + wait >= deadline:
                break
            if wait > 0:
                await asyncio.sleep(wait)
            batch = generator.records(size)
            report.invalid += sum(1 for r in batch if r.invalid)
            await queue.put(batch)
        for _ in range(concurrency):
            await queue.put(None)

    async def work(session: aiohttp.ClientSession) -> None:
        while (batch := await queue.get()) is not None:
            await _post(session, endpoint, batch, report)
            progress.update(len(batch))

    try:
        await _drive(pace, work, concurrency, timeout)
    finally:
        progress.close()
        report.elapsed = time.monotonic() - started
    return report


async def _drive(
    pace: Callable[[], Any],
    work: Callable[[aiohttp.ClientSession], Any],
    concurrency: int,
    timeout: float,
) -> None:
    """One pacer and ``concurrency`` workers sharing a keep-alive session, in a task group:
    if one task fails, the others are cancelled, none is left waiting."""
    connector = aiohttp.TCPConnector(limit=concurrency)
    client_timeout = aiohttp.ClientTimeout(total=timeout)
    async with aiohttp.ClientSession(connector=connector, timeout=client_timeout) as session:
        async with asyncio.TaskGroup() as group:
            group.create_task(pace())
            for _ in range(concurrency):
                group.create_task(work(session))


# ---------------------------------------------------------------------- shaped load

#: Per-record error codes a shaped run resends after a pause (Kinesis: retry later).
RETRIABLE_CODES = frozenset({"ProvisionedThroughputExceededException", "InternalFailure"})
#: Placeholder in each pre-built event id, replaced by the request's number when sent.
_STAMP = b"@@@@@@@@@@@@"
#: Pre-built requests cycled through; events repeat their fields but never their ids.
_TEMPLATES = 32
#: How often the pacer looks at the shape.
_TICK_S = 0.05
_FAILED_HEAD = re.compile(rb'"failed_record_count"\s*:\s*(\d+)')


def _template_parts(generator: EventGenerator, size: int) -> tuple[list[bytes], int]:
    """One request's records as JSON parts with a placeholder in every event id."""
    parts, invalid = [], 0
    for index, record in enumerate(generator.records(size)):
        data = record.data
        if isinstance(data, dict) and isinstance(data.get("event_id"), str):
            data = {**data, "event_id": f"{_STAMP.decode()}-{index:03d}"}
        invalid += record.invalid is not None
        parts.append(orjson.dumps({"data": data, "partition_key": record.partition_key}))
    return parts, invalid


def _retry_after(response: aiohttp.ClientResponse) -> float:
    try:
        return min(30.0, max(0.05, float(response.headers.get("Retry-After", "0.5"))))
    except ValueError:
        return 0.5


async def send_shaped(
    url: str,
    stream: str,
    shape: Any,
    count: int,
    batch_size: int = MAX_BATCH_RECORDS,
    concurrency: int = 8,
    invalid_ratio: float = 0.0,
    seed: int | None = None,
    show_progress: bool = False,
    timeout: float = 30.0,
) -> SendReport:
    """Post events following ``shape.rate_at(t)`` (e.g. :class:`streams.loadshape.YleShape`)
    for ``shape.duration`` seconds or until ``count`` events, honouring throttling.

    Cheap enough for bursts of tens of thousands of events/s on the machine under test:
    requests are pre-built from :class:`EventGenerator` records and get fresh event ids
    by one bytes replace each. A 503 answer is retried after its ``Retry-After``; records
    failed with a retriable code (``ProvisionedThroughputExceededException``,
    ``InternalFailure``) are resent after a pause; nothing accepted is sent twice. When the
    ingest is slower than the shape, the pacer waits for a free connection instead of
    queueing: the achieved rate falls behind the target, which the progress bar shows.
    """
    _check_args(max(1.0, shape.rate_at(0)), count, shape.duration, batch_size, concurrency)
    generator = EventGenerator(seed=seed, invalid_ratio=invalid_ratio)
    templates = [_template_parts(generator, batch_size) for _ in range(_TEMPLATES)]
    endpoint = f"{url.rstrip('/')}/v1/streams/{quote(stream, safe='')}/records"
    report = SendReport(url=url, stream=stream)
    report.target = min(count, shape.expected_events())
    queue: asyncio.Queue[tuple[list[bytes], bytes] | None] = asyncio.Queue(maxsize=concurrency)
    progress = tqdm(total=report.target, unit="ev", disable=not show_progress, leave=False)
    started = time.monotonic()

    async def pace() -> None:
        owed = 0.0
        number = 0
        last = started
        window: list[tuple[float, int]] = []
        while report.sent < count:
            now = time.monotonic()
            t = now - started
            if t >= shape.duration:
                break
            rate = shape.rate_at(t)
            # Behind the shape (the ingest is slower): no catching up past a second's worth.
            owed = min(owed + rate * (now - last), rate + batch_size)
            last = now
            while owed >= 1 and report.sent < count:
                size = int(min(owed, batch_size, count - report.sent))
                parts, invalid = templates[number % _TEMPLATES]
                stamp = b"%012d" % number
                number += 1
                await queue.put((parts[:size], stamp))
                owed -= size
                report.sent += size
                report.invalid += invalid * size // len(parts)
                window.append((time.monotonic(), size))
            cutoff = time.monotonic() - 1.0
            while window and window[0][0] < cutoff:
                window.pop(0)
            progress.set_postfix_str(
                f"target {rate:,.0f}/s achieved {sum(n for _, n in window):,.0f}/s",
                refresh=False,
            )
            await asyncio.sleep(_TICK_S)
        for _ in range(concurrency):
            await queue.put(None)

    async def post(session: aiohttp.ClientSession, parts: list[bytes], stamp: bytes) -> None:
        body = (b'{"records":[' + b",".join(parts) + b"]}").replace(_STAMP, stamp)
        n = len(parts)
        while True:
            report.requests += 1
            try:
                async with session.post(
                    endpoint, data=body, headers={"content-type": "application/json"}
                ) as response:
                    payload = await response.read()
                    status = response.status
                    pause = _retry_after(response)
            except (aiohttp.ClientError, TimeoutError) as exc:
                report.reject(type(exc).__name__, str(exc) or repr(exc), n)
                return
            if status == 503:
                report.throttled_requests += 1
                await asyncio.sleep(pause)
                continue
            if status != 200:
                report.reject(f"HTTP {status}", payload[:200].decode("utf-8", "replace"), n)
                return
            head = _FAILED_HEAD.search(payload, 0, 64)
            if head is not None and head[1] == b"0":
                report.accepted += n
                progress.update(n)
                return
            results = _results(_json_or_none(payload), n)
            if results is None:  # before, a short or non-JSON answer ended the whole run
                report.reject("BadResponse", f"expected {n} results: {payload[:200]!r}", n)
                return
            retry = []
            for part, result in zip(parts, results, strict=True):
                code = result.get("error_code") if isinstance(result, dict) else None
                if code is None:
                    report.accepted += 1
                elif code in RETRIABLE_CODES:
                    retry.append(part)
                else:
                    report.failed += 1
                    report.note_error(str(code), str(result.get("error_message")))
            progress.update(n - len(retry))
            if not retry:
                return
            report.resent += len(retry)
            parts, n = retry, len(retry)
            body = (b'{"records":[' + b",".join(parts) + b"]}").replace(_STAMP, stamp)
            await asyncio.sleep(pause)

    async def work(session: aiohttp.ClientSession) -> None:
        while (item := await queue.get()) is not None:
            await post(session, *item)

    try:
        await _drive(pace, work, concurrency, timeout)
    finally:
        progress.close()
        report.elapsed = time.monotonic() - started
    return report
