"""The AWS JSON 1.1 protocol: targets, request bodies, field checks and error answers.

Kinesis (``Kinesis_20131202``), Firehose (``Firehose_20150804``) and Glue (``AWSGlue``) all
speak it: ``POST /`` with ``X-Amz-Target: <prefix>.<Operation>``, content type
``application/x-amz-json-1.1``, a JSON object as body, blobs as base64 strings, timestamps
as epoch seconds. Errors are ``{"__type": "<Code>", "message": "..."}`` with a 4xx status;
boto3 raises them as ``client.exceptions.<Code>``.

Pure logic, no Kafka: every check here names the field and the value that failed, in the
words AWS uses (``1 validation error detected: Value ... at 'records' failed to satisfy
constraint: ...``), so the errors an existing producer logs read the same as on AWS.
"""

from __future__ import annotations

import base64
import binascii
import math
import re
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import orjson

__all__ = [
    "ACCEPTED_CONTENT_TYPES",
    "CONTENT_TYPE",
    "AwsError",
    "check_content_type",
    "decode_blob",
    "encode_blob",
    "field_path",
    "opt_bool",
    "opt_int",
    "opt_object",
    "opt_string",
    "opt_timestamp",
    "page",
    "page_token",
    "parse_body",
    "parse_target",
    "req_list",
    "req_string",
    "validation_error",
]

#: The content type boto3 sends and every answer carries.
CONTENT_TYPE = "application/x-amz-json-1.1"

#: Content types taken as JSON 1.1 (1.0 bodies are the same JSON; some SDKs send it).
ACCEPTED_CONTENT_TYPES = frozenset((CONTENT_TYPE, "application/x-amz-json-1.0", "application/json"))

_TARGET_RE = re.compile(r"^([A-Za-z0-9_]{1,64})\.([A-Za-z0-9]{1,64})$")


class AwsError(Exception):
    """An AWS-shaped refusal: HTTP status, ``__type`` code and a message naming the fault."""

    def __init__(self, status: int, code: str, message: str) -> None:
        self.status = status
        self.code = code
        self.message = message
        super().__init__(f"{status} {code}: {message}")

    def body(self) -> dict[str, str]:
        """The JSON body AWS answers errors with (boto3 reads ``__type`` and ``message``)."""
        return {"__type": self.code, "message": self.message}


def _short(value: Any, limit: int = 64) -> str:
    text = repr(value) if not isinstance(value, str) else value
    return text if len(text) <= limit else text[:limit] + "..."


def validation_error(path: str, value: Any, constraint: str) -> AwsError:
    """AWS's wording for a request field that breaks its model constraint."""
    return AwsError(
        400,
        "ValidationException",
        f"1 validation error detected: Value '{_short(value)}' at '{path}' failed to "
        f"satisfy constraint: {constraint}",
    )


def field_path(*parts: str | int) -> str:
    """AWS's path notation: ``records.3.member.data`` (camelCase names, 1-based members)."""
    out: list[str] = []
    for part in parts:
        if isinstance(part, int):
            out.append(f"{part + 1}.member")
        else:
            out.append(part[:1].lower() + part[1:])
    return ".".join(out)


def check_content_type(value: str | None) -> None:
    """Refuse a body that is not JSON 1.1, saying what to send instead."""
    media = (value or "").split(";", 1)[0].strip().lower()
    if media in ACCEPTED_CONTENT_TYPES:
        return
    if media.endswith("cbor-1.1"):
        raise AwsError(
            400,
            "SerializationException",
            f"content type {media!r} (CBOR) is not supported; send {CONTENT_TYPE} "
            "(Java SDK and KPL: set AWS_CBOR_DISABLE=true)",
        )
    raise AwsError(
        400,
        "SerializationException",
        f"content type {media or '(none)'!r} is not accepted; send {CONTENT_TYPE}",
    )


def parse_target(value: str | None, known: Mapping[str, object]) -> tuple[str, str]:
    """Split ``X-Amz-Target`` into (service prefix, operation); the prefix must be known."""
    if not value:
        raise AwsError(
            400,
            "UnknownOperationException",
            "missing X-Amz-Target header; expected e.g. Kinesis_20131202.PutRecords",
        )
    match = _TARGET_RE.match(value.strip())
    if match is None:
        raise AwsError(
            400,
            "UnknownOperationException",
            f"X-Amz-Target {_short(value)!r} is not <Service>.<Operation>",
        )
    prefix, operation = match.groups()
    if prefix not in known:
        raise AwsError(
            400,
            "UnknownOperationException",
            f"unknown service {prefix!r} in X-Amz-Target (served: {', '.join(sorted(known))})",
        )
    return prefix, operation


def parse_body(body: bytes) -> dict[str, Any]:
    """The request's JSON object (an empty body is ``{}``, as some SDKs send for no input)."""
    if not body.strip():
        return {}
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise AwsError(
            400,
            "SerializationException",
            f"request body is not valid JSON: {exc.msg} at line {exc.lineno} column "
            f"{exc.colno} (byte {exc.pos})",
        ) from exc
    if not isinstance(parsed, dict):
        raise AwsError(
            400,
            "SerializationException",
            f"request body must be a JSON object, got {type(parsed).__name__}",
        )
    return parsed


# --------------------------------------------------------------------------- field checks


def _type_error(path: str, value: Any, expected: str) -> AwsError:
    return AwsError(
        400,
        "SerializationException",
        f"'{path}' must be {expected}, got {type(value).__name__} {_short(value)}",
    )


def opt_string(
    obj: Mapping[str, Any],
    name: str,
    *,
    path: str | None = None,
    min_len: int = 0,
    max_len: int | None = None,
    pattern: re.Pattern[str] | None = None,
) -> str | None:
    """An optional string field, checked against its length and pattern."""
    value = obj.get(name)
    if value is None:
        return None
    where = path or field_path(name)
    if not isinstance(value, str):
        raise _type_error(where, value, "a string")
    if len(value) < min_len:
        raise validation_error(
            where, value, f"Member must have length greater than or equal to {min_len}"
        )
    if max_len is not None and len(value) > max_len:
        raise validation_error(
            where, value, f"Member must have length less than or equal to {max_len}"
        )
    if pattern is not None and not pattern.fullmatch(value):
        raise validation_error(
            where, value, f"Member must satisfy regular expression pattern: {pattern.pattern}"
        )
    return value


def req_string(obj: Mapping[str, Any], name: str, **checks: Any) -> str:
    """A required string field."""
    value = opt_string(obj, name, **checks)
    if value is None:
        where = checks.get("path") or field_path(name)
        raise validation_error(where, None, "Member must not be null")
    return value


def opt_int(
    obj: Mapping[str, Any],
    name: str,
    *,
    low: int | None = None,
    high: int | None = None,
    path: str | None = None,
) -> int | None:
    """An optional integer field within [low, high]."""
    value = obj.get(name)
    if value is None:
        return None
    where = path or field_path(name)
    if isinstance(value, bool) or not isinstance(value, int):
        raise _type_error(where, value, "an integer")
    if low is not None and value < low:
        raise validation_error(
            where, value, f"Member must have value greater than or equal to {low}"
        )
    if high is not None and value > high:
        raise validation_error(where, value, f"Member must have value less than or equal to {high}")
    return value


def page_token(payload: Mapping[str, Any], code: str) -> int:
    """The offset a ``NextToken`` of :func:`page` holds (0 without one); ``code`` is the
    service's error code for a token it never gave (Glue and Athena name it differently)."""
    token = opt_string(payload, "NextToken")
    if token is None:
        return 0
    if not token.isdigit():
        raise AwsError(400, code, f"NextToken {token!r} is not valid")
    return int(token)


def page(
    payload: Mapping[str, Any],
    items: Sequence[Any],
    key: str,
    *,
    limit: int,
    low: int = 1,
    code: str,
) -> dict[str, Any]:
    """One page of ``items`` under ``key``: ``MaxResults`` in [low, limit] (absent or 0:
    ``limit``) from the offset ``NextToken`` holds, and the next page's token if any."""
    offset = page_token(payload, code)
    size = opt_int(payload, "MaxResults", low=low, high=limit) or limit
    answer: dict[str, Any] = {key: list(items[offset : offset + size])}
    if offset + size < len(items):
        answer["NextToken"] = str(offset + size)
    return answer


def opt_bool(obj: Mapping[str, Any], name: str) -> bool | None:
    """An optional boolean field."""
    value = obj.get(name)
    if value is None:
        return None
    if not isinstance(value, bool):
        raise _type_error(field_path(name), value, "true or false")
    return value


def opt_object(obj: Mapping[str, Any], name: str, path: str | None = None) -> dict[str, Any]:
    """An optional structure field ({} when absent)."""
    value = obj.get(name)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _type_error(path or field_path(name), value, "an object")
    return value


def req_list(
    obj: Mapping[str, Any], name: str, *, min_len: int = 0, max_len: int | None = None
) -> list[Any]:
    """A required list field with its length bounds."""
    value = obj.get(name)
    where = field_path(name)
    if value is None:
        raise validation_error(where, None, "Member must not be null")
    if not isinstance(value, list):
        raise _type_error(where, value, "a list")
    if len(value) < min_len:
        raise validation_error(
            where,
            f"[{len(value)} items]",
            f"Member must have length greater than or equal to {min_len}",
        )
    if max_len is not None and len(value) > max_len:
        raise validation_error(
            where,
            f"[{len(value)} items]",
            f"Member must have length less than or equal to {max_len}",
        )
    return value


def opt_timestamp(obj: Mapping[str, Any], name: str) -> float | None:
    """An optional timestamp: epoch seconds (what boto3 sends) or an ISO 8601 string."""
    value = obj.get(name)
    if value is None:
        return None
    where = field_path(name)
    if isinstance(value, bool):
        raise _type_error(where, value, "epoch seconds")
    if isinstance(value, (int, float)):
        if not math.isfinite(value) or value < 0 or value > 32_503_680_000:
            raise validation_error(where, value, "Member must be a time between 1970 and 3000")
        return float(value)
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
        except ValueError as exc:
            raise _type_error(where, value, "epoch seconds or an ISO 8601 time") from exc
    raise _type_error(where, value, "epoch seconds")


# --------------------------------------------------------------------------- blobs


def decode_blob(value: Any, path: str) -> bytes:
    """A base64 blob field's bytes; padding and alphabet are checked strictly."""
    if not isinstance(value, str):
        raise _type_error(path, value, "a base64 string")
    try:
        return binascii.a2b_base64(value, strict_mode=True)
    except (binascii.Error, ValueError) as exc:
        raise AwsError(
            400,
            "SerializationException",
            f"'{path}' is not valid base64 ({exc}); blobs are base64 strings",
        ) from exc


def encode_blob(data: bytes) -> str:
    """Bytes as the base64 string JSON 1.1 carries."""
    return base64.b64encode(data).decode("ascii")
