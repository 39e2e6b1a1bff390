"""One answer to "may this pass by itself?": firelake.errors and the Kafka layer agree."""

from __future__ import annotations

import aiokafka.errors as aiokafka_errors
import kafka.errors as kafka_errors

from firelake.errors import TerminalError, TransientError, is_retriable
from streams.kafka_errors import THROTTLE_ERRORS, is_transient


def test_a_kafka_timeout_is_retriable_though_it_flags_itself_not() -> None:
    # aiokafka says retriable=False; is_transient said True: the two disagreed.
    assert aiokafka_errors.KafkaTimeoutError.retriable is False
    assert is_retriable(aiokafka_errors.KafkaTimeoutError())
    assert is_retriable(kafka_errors.KafkaTimeoutError())


def test_is_transient_and_is_retriable_agree() -> None:
    samples: list[BaseException] = [
        *(cls() for cls in THROTTLE_ERRORS),
        aiokafka_errors.KafkaConnectionError(),
        aiokafka_errors.TopicAuthorizationFailedError(),
        aiokafka_errors.MessageSizeTooLargeError(),
        aiokafka_errors.KafkaError(),
        ConnectionResetError(),
        ValueError("bad"),
        TerminalError("no"),
        TransientError("later"),
    ]
    for error in samples:
        assert is_transient(error) == is_retriable(error), error
    assert all(is_retriable(cls()) for cls in THROTTLE_ERRORS)
    assert not is_retriable(aiokafka_errors.TopicAuthorizationFailedError())
    assert not is_retriable(ValueError("bad"))
