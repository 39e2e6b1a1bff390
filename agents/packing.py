"""Envelope packing: event lines bound for (stream, partition)s, sealed into bounded messages.

The design rule "pay per-message costs per batch" makes every internal stream carry
envelopes. :class:`EnvelopePacker` is the one place a router turns lines into the Kafka
messages it sends — typed outputs and DLQ records alike: lines bound for one (stream,
partition) leave as one envelope, in the order they were added, split at ``max_events``
lines or ``max_bytes`` bytes (lines plus their keys), with the event-time range in the
headers. A stream with ``envelope = "single"`` gets one plain message per line instead.

Pure: no Kafka client, no clock; :class:`Outgoing` is what an engine hands to its producer.
"""

from __future__ import annotations

from dataclasses import dataclass

from agents.validation import canonical_to_epoch_ms
from streams.envelope import encode

__all__ = ["MAX_ENVELOPE_BYTES", "MAX_ENVELOPE_EVENTS", "EnvelopePacker", "Outgoing"]

#: Most events in one outgoing envelope (routers' default; window results always).
MAX_ENVELOPE_EVENTS = 5_000
#: Most bytes (event lines plus their keys) in one outgoing envelope: under Kafka's default
#: 1 MiB message limit (message.max.bytes), with room for headers and batch overhead.
MAX_ENVELOPE_BYTES = 900_000


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


class _Open:
    """The envelope being filled for one (stream, partition)."""

    __slots__ = ("keys", "lines", "origins", "size", "tmax", "tmin")

    def __init__(self) -> None:
        self.lines: list[bytes] = []
        self.origins: list[int] = []
        self.keys: list[str] = []
        self.size = 0
        self.tmin = ""
        self.tmax = ""


class EnvelopePacker:
    """Packs lines into bounded envelopes per (stream, partition); :meth:`finish` seals all.

    ``keyed``: every line comes with its event key (the envelope carries the keys and the
    first one as the Kafka message key). Messages come out in the order they became full
    (or were sent single), then the open envelopes in the order they were opened.
    """

    __slots__ = ("_open", "keyed", "max_bytes", "max_events", "out")

    def __init__(self, max_events: int, max_bytes: int, *, keyed: bool) -> None:
        self.max_events = max_events
        self.max_bytes = max_bytes
        self.keyed = keyed
        self.out: list[Outgoing] = []
        self._open: dict[tuple[str, int], _Open] = {}

    def too_large(self, data: bytes, key: str | None) -> bool:
        """Whether one line (with its key) could never fit in an envelope."""
        return len(data) + (len(key) + 3 if key is not None else 0) > self.max_bytes

    def add(
        self,
        stream: str,
        partition: int,
        data: bytes,
        key: str | None,
        origin: int | None,
        when: object = "",
    ) -> None:
        """Append a line for ``stream[partition]``; seals the envelope first if it is full.

        ``origin`` is the line's index in the incoming message (None: not from one);
        ``when`` its canonical event time (any non-string or "" is left out of the range).
        """
        slot = (stream, partition)
        envelope = self._open.get(slot)
        if envelope is None:
            envelope = self._open[slot] = _Open()
        cost = len(data) + 1 + (len(key) + 3 if key is not None else 0)
        if envelope.lines and (
            len(envelope.lines) >= self.max_events or envelope.size + cost > self.max_bytes
        ):
            self.out.append(self._seal(stream, partition, envelope))
            envelope = self._open[slot] = _Open()
        envelope.lines.append(data)
        if origin is not None:
            envelope.origins.append(origin)
        if key is not None:
            envelope.keys.append(key)
        envelope.size += cost
        if type(when) is str and when:
            # Canonical timestamps sort as strings: convert only min and max.
            if not envelope.tmin or when < envelope.tmin:
                envelope.tmin = when
            if when > envelope.tmax:
                envelope.tmax = when

    def single(
        self, stream: str, partition: int, data: bytes, key: str | None, origins: tuple[int, ...]
    ) -> None:
        """One plain message (``envelope = "single"`` streams), in order with the others."""
        key_bytes = key.encode("utf-8") if key is not None else None
        self.out.append(Outgoing(stream, partition, data, None, key_bytes, origins))

    def finish(self) -> list[Outgoing]:
        """Every message: the ones sealed so far, then the open envelopes sealed."""
        out = self.out
        for (stream, partition), envelope in self._open.items():
            out.append(self._seal(stream, partition, envelope))
        self._open = {}
        self.out = []
        return out

    def _seal(self, stream: str, partition: int, envelope: _Open) -> Outgoing:
        keys = envelope.keys if self.keyed else None
        time_min = canonical_to_epoch_ms(envelope.tmin) if envelope.tmin else 0
        time_max = canonical_to_epoch_ms(envelope.tmax) if envelope.tmax else 0
        value, headers = encode(envelope.lines, keys, time_min, time_max)
        message_key = keys[0].encode("utf-8") if keys else None
        return Outgoing(stream, partition, value, headers, message_key, tuple(envelope.origins))
