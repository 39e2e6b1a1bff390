"""AWS Signature Version 4: parse the ``Authorization`` header and verify the signature.

By default the AWS endpoints take any credentials (like LocalStack), because producers
being moved off AWS keep whatever keys they had. With access keys configured
(:class:`Credentials`), the access key id must be one of them (else
``UnrecognizedClientException``); a key configured with its secret must also sign the
request correctly (else ``InvalidSignatureException``), within 15 minutes of the
server's clock like AWS. Unsigned requests are refused with ``MissingAuthenticationToken``
only when keys are configured.

Pure logic (hashlib and hmac only), checked in the unit tests against botocore's own
signer.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

from api.protocol import AwsError

__all__ = [
    "ALGORITHM",
    "MAX_SKEW_SECONDS",
    "Authorization",
    "Credentials",
    "canonical_request",
    "parse_authorization",
    "signature",
    "signing_key",
    "string_to_sign",
]

ALGORITHM = "AWS4-HMAC-SHA256"
#: How far the request's X-Amz-Date may be from the server's clock (AWS: 15 minutes).
MAX_SKEW_SECONDS = 15 * 60

_CREDENTIAL_RE = re.compile(
    r"^(?P<key>[^/\s]{1,128})/(?P<date>\d{8})/(?P<region>[a-z0-9-]{1,64})/"
    r"(?P<service>[a-z0-9-]{1,64})/aws4_request$"
)
_SPACES = re.compile(r"\s+")


@dataclass(frozen=True, slots=True)
class Authorization:
    """The parts of a SigV4 ``Authorization`` header."""

    access_key: str
    date: str
    region: str
    service: str
    signed_headers: tuple[str, ...]
    signature: str

    @property
    def scope(self) -> str:
        return f"{self.date}/{self.region}/{self.service}/aws4_request"


def _incomplete(reason: str) -> AwsError:
    return AwsError(400, "IncompleteSignatureException", f"Authorization header: {reason}")


def parse_authorization(header: str) -> Authorization:
    """Parse ``AWS4-HMAC-SHA256 Credential=..., SignedHeaders=..., Signature=...``."""
    algorithm, _, rest = header.strip().partition(" ")
    if algorithm != ALGORITHM:
        raise _incomplete(f"algorithm {algorithm[:40]!r} is not supported; use {ALGORITHM}")
    parts: dict[str, str] = {}
    for item in rest.split(","):
        name, sep, value = item.strip().partition("=")
        if sep:
            parts[name] = value
    for name in ("Credential", "SignedHeaders", "Signature"):
        if name not in parts:
            raise _incomplete(f"missing {name}=")
    match = _CREDENTIAL_RE.match(parts["Credential"])
    if match is None:
        raise _incomplete(
            "Credential must be <access key>/<yyyymmdd>/<region>/<service>/aws4_request"
        )
    signed = tuple(parts["SignedHeaders"].split(";"))
    if not all(signed) or list(signed) != sorted(signed) or "host" not in signed:
        raise _incomplete("SignedHeaders must be sorted, lower-case and include host")
    sig = parts["Signature"]
    if not re.fullmatch(r"[0-9a-f]{64}", sig):
        raise _incomplete("Signature must be 64 lower-case hex digits")
    return Authorization(
        access_key=match["key"],
        date=match["date"],
        region=match["region"],
        service=match["service"],
        signed_headers=signed,
        signature=sig,
    )


def _canonical_query(query: str) -> str:
    pairs = urllib.parse.parse_qsl(query, keep_blank_values=True)
    encoded = sorted(
        (urllib.parse.quote(k, safe="-_.~"), urllib.parse.quote(v, safe="-_.~")) for k, v in pairs
    )
    return "&".join(f"{k}={v}" for k, v in encoded)


def canonical_request(
    method: str,
    path: str,
    query: str,
    headers: Mapping[str, str],
    signed_headers: tuple[str, ...],
    payload_sha256: str,
) -> str:
    """The canonical request SigV4 hashes; ``headers`` keys are lower-case."""
    uri = urllib.parse.quote(path or "/", safe="/-_.~%")
    lines = [method.upper(), uri, _canonical_query(query)]
    for name in signed_headers:
        lines.append(f"{name}:{_SPACES.sub(' ', headers.get(name, '').strip())}")
    return "\n".join([*lines, "", ";".join(signed_headers), payload_sha256])


def string_to_sign(amz_date: str, scope: str, canonical: str) -> str:
    """What the signing key signs."""
    digest = hashlib.sha256(canonical.encode("utf-8")).hexdigest()
    return f"{ALGORITHM}\n{amz_date}\n{scope}\n{digest}"


def signing_key(secret: str, date: str, region: str, service: str) -> bytes:
    """The derived key of one day, region and service."""
    key = ("AWS4" + secret).encode("utf-8")
    for part in (date, region, service, "aws4_request"):
        key = hmac.new(key, part.encode("utf-8"), hashlib.sha256).digest()
    return key


def signature(secret: str, auth: Authorization, amz_date: str, canonical: str) -> str:
    """The hex signature a request with this canonical form must carry."""
    key = signing_key(secret, auth.date, auth.region, auth.service)
    return hmac.new(
        key, string_to_sign(amz_date, auth.scope, canonical).encode("utf-8"), hashlib.sha256
    ).hexdigest()


def _amz_time(value: str) -> datetime:
    try:
        return datetime.strptime(value, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    except ValueError as exc:
        raise _incomplete(f"X-Amz-Date {value[:40]!r} is not yyyymmddThhmmssZ") from exc


@dataclass(frozen=True)
class Credentials:
    """Which access keys may call; ``None`` as a secret accepts any signature of that key.

    An empty mapping (the default) accepts every request, signed or not.
    """

    keys: Mapping[str, str | None] = field(default_factory=dict)

    @property
    def enforced(self) -> bool:
        return bool(self.keys)

    @classmethod
    def parse(cls, text: str) -> Credentials:
        """``"AKID1:SECRET1,AKID2"`` (a key without ``:secret`` is checked by id only)."""
        keys: dict[str, str | None] = {}
        for item in text.split(","):
            item = item.strip()
            if not item:
                continue
            key, sep, secret = item.partition(":")
            keys[key] = secret if sep else None
        return cls(keys)

    def check(
        self,
        method: str,
        path: str,
        query: str,
        headers: Mapping[str, str],
        body: bytes,
        now: datetime | None = None,
    ) -> Authorization | None:
        """Verify a request; returns its parsed Authorization (None when unsigned and open).

        ``headers`` maps lower-case names to values (repeated headers joined by ``,``).
        """
        header = headers.get("authorization")
        if not header:
            if self.enforced:
                raise AwsError(
                    403,
                    "MissingAuthenticationToken",
                    "the request is not signed; sign it with SigV4 using a configured access key",
                )
            return None
        try:
            auth = parse_authorization(header)
        except AwsError:
            if self.enforced:
                raise
            return None  # open endpoint: a header we cannot parse does not matter
        if not self.enforced:
            return auth
        if auth.access_key not in self.keys:
            raise AwsError(
                403,
                "UnrecognizedClientException",
                f"the security token included in the request is invalid: access key "
                f"{auth.access_key!r} is not configured",
            )
        secret = self.keys[auth.access_key]
        if secret is None:
            return auth
        amz_date = headers.get("x-amz-date", "")
        if not amz_date:
            raise _incomplete("missing X-Amz-Date header")
        moment = _amz_time(amz_date)
        now = now or datetime.now(UTC)
        if abs((now - moment).total_seconds()) > MAX_SKEW_SECONDS:
            raise AwsError(
                403,
                "InvalidSignatureException",
                f"Signature expired: {amz_date} is more than 15 minutes from the server time "
                f"{now.strftime('%Y%m%dT%H%M%SZ')}",
            )
        payload = headers.get("x-amz-content-sha256") or hashlib.sha256(body).hexdigest()
        canonical = canonical_request(method, path, query, headers, auth.signed_headers, payload)
        expected = signature(secret, auth, amz_date, canonical)
        if not hmac.compare_digest(expected, auth.signature):
            raise AwsError(
                403,
                "InvalidSignatureException",
                "The request signature we calculated does not match the signature you provided. "
                "Check your AWS Secret Access Key and signing method.",
            )
        return auth
