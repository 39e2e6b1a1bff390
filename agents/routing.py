"""The router's logic: one incoming message in, the envelopes to send out.

Yle's Router Lambda reads batches from the raw Kinesis stream, validates each event, stamps
the receive time and forwards it by event type. :class:`Router` does the same for one Kafka
message at a time without touching Kafka: the Faust edge (``agents/router.py``) feeds it
``(value, headers, key, topic, partition, offset, timestamp_ms)`` and sends what it returns.

Per event: parse the JSON object; look up ``route_field`` in the router's routes (a value may
fan out to several streams); stamp ``receive_time_field`` with the raw message's Kafka
timestamp when a destination schema declares it; validate against each destination's schema;
place it on ``partition_for_key(key, partitions)`` of each destination (or the source
partition modulo the destination's partitions for events without a key) so per-key order
holds. Events bound for one (stream, partition) leave as one envelope, lines in input order,
split at ``max_envelope_events`` events or ``max_envelope_bytes`` bytes. Everything that cannot
be routed becomes a DLQ record; nothing raises out of :meth:`Router.route` for bad data.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from agents.dedup import DedupWindow
from agents.dlq import DEFAULT_MAX_PAYLOAD_BYTES, DeadLetters, dlq_line, redrive_state
from agents.enrich import date_hour, stable_event_id
from firelake.grammars.patterns import compile_pattern, compile_patterns
from agents.retry import RetryPolicy
from agents.transform import Ok, ProcessingFailed, TransformRunner, load_transform
from agents.validation import (
    ENVELOPE_ERROR,
    NO_ROUTE,
    PROCESSING_FAILED,
    TOO_LARGE,
    TOO_OLD,
    ValidationError,
    Validator,
    _shown,
    canonical_to_epoch_ms,
    format_epoch_ms,
    parse_event,
    validator_for,
)
from firelake.config import FirelakeConfig, RouterConfig
from streams.envelope import EnvelopeError, decode, encode
from streams.partitioning import partition_for_key

__all__ = [
    "DEFAULT_MAX_ENVELOPE_BYTES",
    "DEFAULT_MAX_ENVELOPE_EVENTS",
    "Outgoing",
    "Router",
    "RouterStats",
    "policy_of",
]

#: Most events in one outgoing envelope.
DEFAULT_MAX_ENVELOPE_EVENTS = 5_000
#: Most bytes (event lines plus their keys) in one outgoing envelope: under Kafka's default
#: 1 MiB message limit (message.max.bytes), with room for headers and batch overhead.
DEFAULT_MAX_ENVELOPE_BYTES = 900_000

Headers = Sequence[tuple[str, bytes]]


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One Kafka message to send: to ``stream`` on an explicit ``partition``."""

    stream: str
    partition: int
    value: bytes
    headers: list[tuple[str, bytes]] | None
    key: bytes | None
    #: Index in the incoming message of each event line (to dead-letter a failed delivery).
    origins: tuple[int, ...] = ()


@dataclass
class RouterStats:
    """Counters since the router was built.

    ``routed`` counts (event, destination) deliveries, so a fanned-out event counts once per
    destination; ``dead_lettered`` counts DLQ records by error type.
    """

    messages: int = 0
    events_in: int = 0
    routed: int = 0
    filtered: int = 0
    duplicates: int = 0
    dropped: int = 0
    dead_lettered: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class _Destination:
    stream: str
    partitions: int
    single: bool


@dataclass(frozen=True, slots=True)
class _Group:
    """Destinations of one route value that share a schema: validated once."""

    validator: Validator | None
    time_field: str
    destinations: tuple[_Destination, ...]
    stamps_date: bool = False


@dataclass(frozen=True, slots=True)
class _Route:
    groups: tuple[_Group, ...]
    stamps_receive_time: bool
    fan_out: bool
    targets: tuple[str, ...] = ()


class _Buffer:
    """Event lines bound for one (stream, partition), sealed into bounded envelopes."""

    __slots__ = ("keyed", "keys", "lines", "origins", "size", "tmax", "tmin")

    def __init__(self, keyed: bool) -> None:
        self.keyed = keyed
        self.lines: list[bytes] = []
        self.origins: list[int] = []
        self.keys: list[str] = []
        self.size = 0
        self.tmin = ""
        self.tmax = ""


def policy_of(spec: RouterConfig) -> RetryPolicy:
    """The retry budget a router's configuration declares."""
    return RetryPolicy(
        max_attempts=spec.max_retry_attempts,
        base_delay_s=spec.retry_base_seconds,
        max_delay_s=spec.retry_max_seconds,
        max_record_age_s=spec.max_record_age_seconds,
    )


@functools.lru_cache(maxsize=65_536)
def _partition_of(key: str, partitions: int) -> int:
    # Keys repeat a lot (users, devices): memoize the MD5 within a bound.
    return partition_for_key(key, partitions)


class Router:
    """A configured router: :meth:`route` turns one raw message into outgoing envelopes."""

    def __init__(
        self,
        config: FirelakeConfig,
        name: str,
        *,
        max_envelope_events: int = DEFAULT_MAX_ENVELOPE_EVENTS,
        max_envelope_bytes: int = DEFAULT_MAX_ENVELOPE_BYTES,
        max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
        clock: Callable[[], float] = time.time,
        dedup: DedupWindow | None = None,
        transform: TransformRunner | None = None,
    ) -> None:
        spec = config.routers.get(name)
        if spec is None:
            known = ", ".join(sorted(config.routers)) or "none"
            raise ValueError(f"{config.source}: no router named {name!r} (declared: {known})")
        if max_envelope_events < 1:
            raise ValueError(f"max_envelope_events must be >= 1, got {max_envelope_events}")
        if max_envelope_bytes < 1024:
            raise ValueError(f"max_envelope_bytes must be >= 1024, got {max_envelope_bytes}")
        self.spec: RouterConfig = spec
        self.name = name
        self.max_envelope_events = max_envelope_events
        self.max_envelope_bytes = max_envelope_bytes
        self.clock = clock
        self.dead_letters = DeadLetters(name, clock, max_payload_bytes)
        self.stats = RouterStats()
        self.policy = policy_of(spec)
        self.dedup = (
            dedup
            if dedup is not None
            else DedupWindow(spec.dedup_window_seconds, spec.dedup_max_ids)
        )
        if not self.dedup.enabled:
            self.dedup = None
        if transform is None and spec.transform:
            transform = TransformRunner(
                load_transform(spec.transform),
                mode=spec.transform_mode,
                timeout_s=spec.transform_timeout_seconds,
                bisect=spec.bisect_on_error,
                policy=self.policy,
                clock=clock,
            )
        self.transform = transform
        self._config = config
        self._filter = compile_patterns(spec.filters, f"routers.{name}.filters")
        self._rules = tuple(
            (compile_pattern(pattern, f"routers.{name}.rules[{i}]"), targets)
            for i, (pattern, targets) in enumerate(spec.rules)
        )
        self._rule_plans: dict[tuple[str, ...], _Route] = {}
        self._id_field = spec.event_id_field
        self._date_field = spec.date_field
        self._hour_field = spec.hour_field
        self._route_field = spec.route_field
        self._receive_field = spec.receive_time_field
        self._known_routes = ", ".join(sorted(spec.routes))
        self._routes = {
            value: self._plan(config, targets) for value, targets in spec.routes.items()
        }
        dlq = config.streams[spec.dlq]
        self._dlq = _Destination(dlq.name, dlq.partitions, dlq.envelope == "single")

    def _plan(self, config: FirelakeConfig, targets: tuple[str, ...]) -> _Route:
        by_schema: dict[str, tuple[Validator | None, str, list[_Destination]]] = {}
        for target in dict.fromkeys(targets):  # a stream listed twice gets the event once
            stream = config.streams[target]
            schema = config.schema_of(target)
            destination = _Destination(target, stream.partitions, stream.envelope == "single")
            slot = schema.name if schema is not None else ""
            if slot not in by_schema:
                validator = validator_for(schema) if schema is not None else None
                time_field = schema.time_field if schema is not None else ""
                by_schema[slot] = (validator, time_field, [])
            by_schema[slot][2].append(destination)
        groups = tuple(
            _Group(v, t, tuple(d), bool(t) and self._declares_date(v))
            for v, t, d in by_schema.values()
        )
        stamps = bool(self._receive_field) and any(
            g.validator is not None and g.validator.schema.field_named(self._receive_field)
            for g in groups
        )
        return _Route(groups, stamps, len(groups) > 1, tuple(targets))

    def _declares_date(self, validator: Validator | None) -> bool:
        if validator is None:
            return False
        schema = validator.schema
        return any(
            bool(name) and schema.field_named(name) is not None
            for name in (self._date_field, self._hour_field)
        )

    # ------------------------------------------------------------------ routing

    def _targets_plan(self, value: Any, event: dict[str, Any]) -> _Route | None:
        """The plan for an event: its route value's streams plus every matching rule's."""
        plan = self._routes.get(value) if type(value) is str else None
        if not self._rules:
            return plan
        extra = tuple(t for matcher, targets in self._rules if matcher(event) for t in targets)
        if not extra:
            return plan
        targets = (plan.targets if plan is not None else ()) + extra
        cached = self._rule_plans.get(targets)
        if cached is None:
            cached = self._rule_plans[targets] = self._plan(self._config, targets)
        return cached

    def route(
        self,
        value: bytes | None,
        headers: Headers | None,
        key: bytes | None,
        topic: str,
        partition: int,
        offset: int,
        timestamp_ms: int | None,
    ) -> list[Outgoing]:
        """The messages to send for one incoming message, typed envelopes first, then DLQ.

        Per event, in order: parse; filter (EventBridge patterns; no match: skipped); event
        id and idempotency window (a repeat is skipped, a redriven retry is not a repeat); the
        user transform (Firehose semantics); route by value and rules; enrich; validate per
        destination schema.
        """
        stats = self.stats
        stats.messages += 1
        out: list[Outgoing] = []
        dead: list[dict[str, Any]] = []
        failed_at = ""
        attempts, first_attempt = redrive_state(headers)

        def dead_letter(
            payload: bytes, index: int, error_type: str, reason: str, event_key: str | None
        ) -> None:
            nonlocal failed_at
            if not failed_at:  # one clock read per message, not per bad event
                failed_at = self.dead_letters.now()
            dead.append(
                self.dead_letters.record(
                    payload,
                    error_type,
                    reason,
                    source_topic=topic,
                    source_partition=partition,
                    source_offset=offset,
                    source_index=index,
                    failed_at=failed_at,
                    attempts=attempts,
                    first_attempt_at=first_attempt,
                    source_key=event_key,
                )
            )

        try:
            envelope = decode(value, headers, key)
        except EnvelopeError as exc:
            key_text = key.decode("utf-8", "replace") if key is not None else None
            dead_letter(value or b"", -1, ENVELOPE_ERROR, f"envelope: {exc}", key_text)
            self.emit_dead(dead, partition, out)
            return out

        lines = envelope.lines
        keys = envelope.keys
        stats.events_in += len(lines)
        if self.policy.too_old(timestamp_ms, self.clock()):
            # Lambda's MaximumRecordAgeInSeconds: a record this old is not processed.
            age = self.clock() - (timestamp_ms or 0) / 1000.0
            limit = self.policy.max_record_age_s
            reason = f"record is {age:.0f}s old; max_record_age_seconds is {limit:g}"
            for index, line in enumerate(lines):
                dead_letter(line, index, TOO_OLD, reason, keys[index] if keys else None)
            self.emit_dead(dead, partition, out)
            return out

        # Phase 1: parse, filter, deduplicate.
        # (index, line, key, event, pristine: the event is exactly its line's JSON)
        accepted: list[tuple[int, bytes, str | None, dict[str, Any], bool]] = []
        matches = self._filter
        id_field = self._id_field
        dedup = self.dedup
        redriven = attempts > 1
        for index, line in enumerate(lines):
            event_key = keys[index] if keys is not None else None
            try:
                event = parse_event(line)
            except ValidationError as exc:
                dead_letter(line, index, exc.error_type, exc.reason, event_key)
                continue
            if matches is not None and not matches(event):
                stats.filtered += 1
                continue
            pristine = True
            if id_field:
                event_id = event.get(id_field)
                if type(event_id) is not str or not event_id:
                    event_id = event[id_field] = stable_event_id(line)
                    pristine = False
                # A redriven event (attempts > 1) was dead-lettered, not routed: its id, seen
                # on the failed try, must not make the retry a "duplicate" that vanishes.
                if (
                    dedup is not None
                    and not dedup.check(topic, partition, event_id)
                    and not redriven
                ):
                    stats.duplicates += 1
                    continue
            accepted.append((index, line, event_key, event, pristine))

        # Phase 2: the user transform, Firehose style.
        if self.transform is not None and accepted:
            results = self.transform([item[3] for item in accepted], timestamp_ms)
            kept = []
            for item, result in zip(accepted, results, strict=True):
                if isinstance(result, Ok):
                    kept.append((item[0], item[1], item[2], result.event, False))
                elif isinstance(result, ProcessingFailed):
                    dead_letter(item[1], item[0], PROCESSING_FAILED, result.message, item[2])
                else:
                    stats.dropped += 1
            accepted = kept

        # Phase 3: route, enrich, validate, pack envelopes.
        buffers: dict[tuple[str, int], _Buffer] = {}
        receive_time = self._receive_time(timestamp_ms)
        route_field = self._route_field
        receive_field = self._receive_field
        date_field, hour_field = self._date_field, self._hour_field
        max_bytes = self.max_envelope_bytes
        keyed = keys is not None
        routed = 0
        for index, line, event_key, event, pristine in accepted:
            route_value = event.get(route_field)
            plan = self._targets_plan(route_value, event)
            if plan is None:
                reason = self._no_route_reason(event, route_value)
                dead_letter(line, index, NO_ROUTE, reason, event_key)
                continue
            if plan.stamps_receive_time:
                event[receive_field] = receive_time
            key_cost = len(event_key) + 3 if event_key is not None else 0
            for group in plan.groups:
                if group.validator is None:
                    # A stream without a schema takes the event as it came (plus its id).
                    data = line if pristine else orjson.dumps(event)
                    when = ""
                else:
                    try:
                        checked = group.validator(event)
                    except ValidationError as exc:
                        reason = exc.reason
                        if plan.fan_out:
                            streams = ", ".join(d.stream for d in group.destinations)
                            reason = f"for {streams}: {reason}"
                        dead_letter(line, index, exc.error_type, reason, event_key)
                        continue
                    when = checked.get(group.time_field, "") if group.time_field else ""
                    if group.stamps_date and type(when) is str:
                        parts = date_hour(when)
                        if parts is not None:
                            if checked is event:
                                checked = dict(event)
                            if date_field:
                                checked[date_field] = parts[0]
                            if hour_field:
                                checked[hour_field] = parts[1]
                    data = orjson.dumps(checked)
                if len(data) + key_cost > max_bytes:
                    dead_letter(
                        line,
                        index,
                        TOO_LARGE,
                        f"event is {len(data)} bytes; envelopes hold at most {max_bytes}",
                        event_key,
                    )
                    continue
                for dest in group.destinations:
                    if event_key is not None:
                        dest_partition = _partition_of(event_key, dest.partitions)
                    else:
                        dest_partition = partition % dest.partitions
                    routed += 1
                    if dest.single:
                        key_bytes = event_key.encode("utf-8") if event_key is not None else None
                        out.append(
                            Outgoing(dest.stream, dest_partition, data, None, key_bytes, (index,))
                        )
                        continue
                    slot = (dest.stream, dest_partition)
                    buffer = buffers.get(slot)
                    if buffer is None:
                        buffer = buffers[slot] = _Buffer(keyed)
                    cost = len(data) + 1 + key_cost
                    if buffer.lines and (
                        len(buffer.lines) >= self.max_envelope_events
                        or buffer.size + cost > max_bytes
                    ):
                        out.append(self._seal(dest.stream, dest_partition, buffer))
                        buffer = buffers[slot] = _Buffer(keyed)
                    buffer.lines.append(data)
                    buffer.origins.append(index)
                    if event_key is not None:
                        buffer.keys.append(event_key)
                    buffer.size += cost
                    if type(when) is str and when:
                        # Canonical timestamps sort as strings: convert only min and max.
                        if not buffer.tmin or when < buffer.tmin:
                            buffer.tmin = when
                        if when > buffer.tmax:
                            buffer.tmax = when

        stats.routed += routed
        for (stream, dest_partition), buffer in buffers.items():
            out.append(self._seal(stream, dest_partition, buffer))
        self.emit_dead(dead, partition, out)
        return out

    def _receive_time(self, timestamp_ms: int | None) -> str:
        if timestamp_ms is not None and timestamp_ms >= 0:
            try:
                return format_epoch_ms(timestamp_ms)
            except OverflowError:
                pass  # a nonsense broker timestamp: fall back to our clock
        return self.dead_letters.now()

    def _no_route_reason(self, event: dict[str, Any], value: Any) -> str:
        field_name = self._route_field
        if value is None:
            state = "is null" if field_name in event else "is missing"
            return f"field {field_name!r} {state}; known routes: {self._known_routes}"
        return f"field {field_name!r}: no route for {_shown(value)} (known: {self._known_routes})"

    def _seal(self, stream: str, partition: int, buffer: _Buffer) -> Outgoing:
        keys = buffer.keys if buffer.keyed else None
        time_min = canonical_to_epoch_ms(buffer.tmin) if buffer.tmin else 0
        time_max = canonical_to_epoch_ms(buffer.tmax) if buffer.tmax else 0
        value, headers = encode(buffer.lines, keys, time_min, time_max)
        message_key = keys[0].encode("utf-8") if keys else None
        return Outgoing(stream, partition, value, headers, message_key, tuple(buffer.origins))

    def emit_dead(self, dead: list[dict[str, Any]], partition: int, out: list[Outgoing]) -> None:
        """DLQ records go to the DLQ partition of their source partition, bounded envelopes."""
        if not dead:
            return
        counts = self.stats.dead_lettered
        for record in dead:
            error_type = record["error_type"]
            counts[error_type] = counts.get(error_type, 0) + 1
        dlq = self._dlq
        dest_partition = partition % dlq.partitions
        if dlq.single:
            out.extend(Outgoing(dlq.stream, dest_partition, dlq_line(r), None, None) for r in dead)
            return
        buffer = _Buffer(keyed=False)
        for record in dead:
            data = dlq_line(record)
            cost = len(data) + 1
            if buffer.lines and (
                len(buffer.lines) >= self.max_envelope_events
                or buffer.size + cost > self.max_envelope_bytes
            ):
                out.append(self._seal(dlq.stream, dest_partition, buffer))
                buffer = _Buffer(keyed=False)
            buffer.lines.append(data)
            buffer.size += cost
            failed_at = record["failed_at"]
            if not buffer.tmin or failed_at < buffer.tmin:
                buffer.tmin = failed_at
            if failed_at > buffer.tmax:
                buffer.tmax = failed_at
        out.append(self._seal(dlq.stream, dest_partition, buffer))
