"""SigV4 verification, checked against botocore's own signer."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials as BotoCredentials

from api.protocol import AwsError
from api.sigv4 import Credentials, parse_authorization

BODY = b'{"StreamName": "s", "Records": []}'


def signed(key: str = "AKID", secret: str = "s3cret") -> tuple[dict[str, str], datetime]:
    request = AWSRequest(
        method="POST",
        url="http://127.0.0.1:4566/",
        data=BODY,
        headers={
            "Content-Type": "application/x-amz-json-1.1",
            "X-Amz-Target": "Kinesis_20131202.PutRecords",
        },
    )
    SigV4Auth(BotoCredentials(key, secret), "kinesis", "eu-north-1").add_auth(request)
    headers = {k.lower(): v for k, v in request.headers.items()}
    headers["host"] = "127.0.0.1:4566"
    return headers, datetime.now(UTC)


def check(creds: Credentials, headers: dict[str, str], body: bytes = BODY, **kw: object) -> object:
    return creds.check("POST", "/", "", headers, body, **kw)  # type: ignore[arg-type]


def test_botocore_signature_verifies() -> None:
    headers, now = signed()
    auth = check(Credentials({"AKID": "s3cret"}), headers, now=now)
    assert auth is not None and auth.region == "eu-north-1" and auth.service == "kinesis"


@pytest.mark.parametrize(
    ("creds", "key", "secret", "body", "code"),
    [
        (Credentials({"AKID": "s3cret"}), "AKID", "wrong", BODY, "InvalidSignatureException"),
        (
            Credentials({"AKID": "s3cret"}),
            "AKID",
            "s3cret",
            BODY + b" ",
            "InvalidSignatureException",
        ),
        (Credentials({"AKID": "s3cret"}), "OTHER", "s3cret", BODY, "UnrecognizedClientException"),
    ],
)
def test_refusals(creds: Credentials, key: str, secret: str, body: bytes, code: str) -> None:
    headers, now = signed(key, secret)
    with pytest.raises(AwsError) as info:
        check(creds, headers, body, now=now)
    assert (info.value.status, info.value.code) == (403, code)


def test_key_without_secret_and_open_endpoint() -> None:
    headers, now = signed("AKID", "anything")
    assert check(Credentials({"AKID": None}), headers, now=now) is not None
    assert check(Credentials(), {}, now=now) is None  # open: unsigned is fine
    with pytest.raises(AwsError, match="not signed"):
        check(Credentials({"AKID": None}), {"host": "x"})


def test_clock_skew_is_refused() -> None:
    headers, now = signed()
    with pytest.raises(AwsError, match="Signature expired"):
        check(Credentials({"AKID": "s3cret"}), headers, now=now + timedelta(minutes=16))


def test_parse_errors_name_the_part() -> None:
    with pytest.raises(AwsError, match="algorithm"):
        parse_authorization("AWS3 Credential=x")
    with pytest.raises(AwsError, match="missing Signature"):
        parse_authorization(
            "AWS4-HMAC-SHA256 Credential=a/20260101/r/s/aws4_request, SignedHeaders=host"
        )
    with pytest.raises(AwsError, match="Credential must be"):
        parse_authorization(
            "AWS4-HMAC-SHA256 Credential=a/2026/r/s/aws4_request, SignedHeaders=host, Signature="
            + "0" * 64
        )
    assert Credentials.parse("A:x, B").keys == {"A": "x", "B": None}
