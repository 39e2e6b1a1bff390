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

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from agents.dedup import DedupWindow
from agents.dlq import (
    DEFAULT_MAX_PAYLOAD_BYTES,
    DeadLetterBatch,
    DeadLetters,
    DeadLetterSource,
    dlq_line,
    redrive_state,
)
from agents.enrich import date_hour, stable_event_id
from agents.packing import MAX_ENVELOPE_BYTES, MAX_ENVELOPE_EVENTS, EnvelopePacker, Outgoing
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
    format_epoch_ms,
    parse_event,
    validator_for,
)
from firelake.config import FirelakeConfig, RouterConfig
from firelake.grammars.patterns import compile_pattern, compile_patterns
from streams.envelope import Envelope, EnvelopeError, decode
from streams.partitioning import cached_partition_for_key

__all__ = [
    "DEFAULT_MAX_ENVELOPE_BYTES",
    "DEFAULT_MAX_ENVELOPE_EVENTS",
    "Outgoing",
    "Router",
    "RouterStats",
    "policy_of",
]

#: A router's envelope bounds unless told otherwise (the packer's, :mod:`agents.packing`).
DEFAULT_MAX_ENVELOPE_EVENTS = MAX_ENVELOPE_EVENTS
DEFAULT_MAX_ENVELOPE_BYTES = MAX_ENVELOPE_BYTES

Headers = Sequence[tuple[str, bytes]]


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


#: An accepted event: (index in the message, its line, its key, the event, pristine — the
#: event is still exactly its line's JSON, so a schema-less stream may send the line as is).
_Accepted = tuple[int, bytes, str | None, dict[str, Any], bool]


def policy_of(spec: RouterConfig) -> RetryPolicy:
    """The retry budget a router's configuration declares."""
    return RetryPolicy(
        max_attempts=spec.max_retry_attempts,
        base_delay_s=spec.retry_base_seconds,
        max_delay_s=spec.retry_max_seconds,
        max_record_age_s=spec.max_record_age_seconds,
    )


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

        The phases, in order: decode the envelope; past the maximum record age, everything
        goes to the DLQ; per event :meth:`_accept` (parse, filter, event id and idempotency
        window), the user transform (:meth:`_transform`, Firehose semantics), then
        :meth:`_pack_events` (route by value and rules, enrich, validate per destination
        schema, pack); last the DLQ records (:meth:`pack_dead`). Each phase adds what it
        cannot handle to the message's :class:`~agents.dlq.DeadLetterBatch`.
        """
        self.stats.messages += 1
        attempts, first_attempt = redrive_state(headers)
        source = DeadLetterSource(topic, partition, offset, attempts, first_attempt)
        dead = DeadLetterBatch(self.dead_letters, source)
        out: list[Outgoing] = []
        envelope = self._decode(value, headers, key, dead)
        if envelope is not None:
            self.stats.events_in += len(envelope.lines)
            if self.policy.too_old(timestamp_ms, self.clock()):
                self._expire(envelope, timestamp_ms, dead)
            else:
                accepted = self._accept(envelope, dead)
                if self.transform is not None and accepted:
                    accepted = self._transform(accepted, timestamp_ms, dead)
                out = self._pack_events(accepted, envelope.keys is not None, timestamp_ms, dead)
        out += self.pack_dead(dead.records, partition)
        return out

    # ------------------------------------------------------------------ phases

    @staticmethod
    def _decode(
        value: bytes | None, headers: Headers | None, key: bytes | None, dead: DeadLetterBatch
    ) -> Envelope | None:
        """The incoming envelope, or None when it cannot be read (one DLQ record, index -1)."""
        try:
            return decode(value, headers, key)
        except EnvelopeError as exc:
            key_text = key.decode("utf-8", "replace") if key is not None else None
            dead.add(value or b"", -1, ENVELOPE_ERROR, f"envelope: {exc}", key_text)
            return None

    def _expire(self, envelope: Envelope, timestamp_ms: int | None, dead: DeadLetterBatch) -> None:
        """Lambda's MaximumRecordAgeInSeconds: a record this old is not processed."""
        age = self.clock() - (timestamp_ms or 0) / 1000.0
        limit = self.policy.max_record_age_s
        reason = f"record is {age:.0f}s old; max_record_age_seconds is {limit:g}"
        keys = envelope.keys
        for index, line in enumerate(envelope.lines):
            dead.add(line, index, TOO_OLD, reason, keys[index] if keys else None)

    def _accept(self, envelope: Envelope, dead: DeadLetterBatch) -> list[_Accepted]:
        """Parse, filter and deduplicate the envelope's events, in order."""
        stats = self.stats
        keys = envelope.keys
        accepted: list[_Accepted] = []
        matches = self._filter
        id_field = self._id_field
        dedup = self.dedup
        source = dead.source
        topic, partition = source.topic, source.partition
        redriven = source.attempts > 1
        for index, line in enumerate(envelope.lines):
            event_key = keys[index] if keys is not None else None
            try:
                event = parse_event(line)
            except ValidationError as exc:
                dead.add(line, index, exc.error_type, exc.reason, event_key)
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
        return accepted

    def _transform(
        self, accepted: list[_Accepted], timestamp_ms: int | None, dead: DeadLetterBatch
    ) -> list[_Accepted]:
        """The user transform, Firehose style: kept (changed), dropped or dead-lettered."""
        assert self.transform is not None
        results = self.transform([item[3] for item in accepted], timestamp_ms)
        kept: list[_Accepted] = []
        for (index, line, event_key, _, _), result in zip(accepted, results, strict=True):
            if isinstance(result, Ok):
                kept.append((index, line, event_key, result.event, False))
            elif isinstance(result, ProcessingFailed):
                dead.add(line, index, PROCESSING_FAILED, result.message, event_key)
            else:
                self.stats.dropped += 1
        return kept

    def _pack_events(
        self,
        accepted: list[_Accepted],
        keyed: bool,
        timestamp_ms: int | None,
        dead: DeadLetterBatch,
    ) -> list[Outgoing]:
        """Route, enrich, validate per destination schema and pack the accepted events."""
        packer = EnvelopePacker(self.max_envelope_events, self.max_envelope_bytes, keyed=keyed)
        receive_time = self._receive_time(timestamp_ms)
        route_field = self._route_field
        receive_field = self._receive_field
        source_partition = dead.source.partition
        routed = 0
        for index, line, event_key, event, pristine in accepted:
            route_value = event.get(route_field)
            plan = self._targets_plan(route_value, event)
            if plan is None:
                reason = self._no_route_reason(event, route_value)
                dead.add(line, index, NO_ROUTE, reason, event_key)
                continue
            if plan.stamps_receive_time:
                event[receive_field] = receive_time
            for group in plan.groups:
                try:
                    data, when = self._render(group, event, line, pristine)
                except ValidationError as exc:
                    reason = exc.reason
                    if plan.fan_out:
                        streams = ", ".join(d.stream for d in group.destinations)
                        reason = f"for {streams}: {reason}"
                    dead.add(line, index, exc.error_type, reason, event_key)
                    continue
                if packer.too_large(data, event_key):
                    limit = self.max_envelope_bytes
                    reason = f"event is {len(data)} bytes; envelopes hold at most {limit}"
                    dead.add(line, index, TOO_LARGE, reason, event_key)
                    continue
                for dest in group.destinations:
                    if event_key is not None:
                        dest_partition = cached_partition_for_key(event_key, dest.partitions)
                    else:
                        dest_partition = source_partition % dest.partitions
                    routed += 1
                    if dest.single:
                        packer.single(dest.stream, dest_partition, data, event_key, (index,))
                    else:
                        packer.add(dest.stream, dest_partition, data, event_key, index, when)
        self.stats.routed += routed
        return packer.finish()

    def _render(
        self, group: _Group, event: dict[str, Any], line: bytes, pristine: bool
    ) -> tuple[bytes, Any]:
        """(line to send, event time) of an event for one schema group; ValidationError."""
        if group.validator is None:
            # A stream without a schema takes the event as it came (plus its id).
            return (line if pristine else orjson.dumps(event)), ""
        checked = group.validator(event)
        when = checked.get(group.time_field, "") if group.time_field else ""
        if group.stamps_date and type(when) is str:
            parts = date_hour(when)
            if parts is not None:
                if checked is event:
                    checked = dict(event)
                if self._date_field:
                    checked[self._date_field] = parts[0]
                if self._hour_field:
                    checked[self._hour_field] = parts[1]
        return orjson.dumps(checked), when

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

    def pack_dead(self, records: Sequence[dict[str, Any]], partition: int) -> list[Outgoing]:
        """DLQ records as messages to the DLQ partition of their source partition, counted.

        Packed by the same :class:`~agents.packing.EnvelopePacker` as the typed outputs:
        bounded envelopes (event time: ``failed_at``), or one message per record on a
        ``single`` DLQ.
        """
        if not records:
            return []
        counts = self.stats.dead_lettered
        for record in records:
            error_type = record["error_type"]
            counts[error_type] = counts.get(error_type, 0) + 1
        dlq = self._dlq
        dest_partition = partition % dlq.partitions
        packer = EnvelopePacker(self.max_envelope_events, self.max_envelope_bytes, keyed=False)
        for record in records:
            if dlq.single:
                packer.single(dlq.stream, dest_partition, dlq_line(record), None, ())
            else:
                packer.add(
                    dlq.stream, dest_partition, dlq_line(record), None, None, record["failed_at"]
                )
        return packer.finish()
