"""Athena's ExecutionParameters: SQL literals become bound values, anything else is refused."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal

import pytest

from api.athena import Execution, execution_parameter


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("'1-7'", "1-7"),
        ("'it''s'", "it's"),
        ("''", ""),
        ("'?; DROP TABLE playback; --'", "?; DROP TABLE playback; --"),
        ("42", 42),
        ("-3", -3),
        ("2.5", 2.5),
        ("1e3", 1000.0),
        ("TRUE", True),
        ("false", False),
        ("NULL", None),
        (" 7 ", 7),
        ("DATE '2026-11-29'", date(2026, 11, 29)),
        ("timestamp '2026-11-29 08:00:00'", datetime(2026, 11, 29, 8, tzinfo=UTC)),
        ("DECIMAL '12.50'", Decimal("12.50")),
    ],
)
def test_a_literal_is_its_value(text: str, value: object) -> None:
    got = execution_parameter(text, 1)
    assert got == value and type(got) is type(value)


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("1-7", "is not a SQL literal"),
        ("abc", "quote text"),
        ("'a' OR 1=1 --'", "is not a SQL literal"),
        ("'unterminated", "is not a SQL literal"),
        ("DATE '2026-13-45'", "not a valid DATE"),
        ("TIMESTAMP 'noon'", "not a valid TIMESTAMP"),
        ("1; SELECT 2", "is not a SQL literal"),
    ],
)
def test_anything_else_is_refused_with_its_position(text: str, says: str) -> None:
    with pytest.raises(ValueError, match=says) as caught:
        execution_parameter(text, 3)
    assert "ExecutionParameters[3]" in str(caught.value)


def test_an_execution_binds_by_position_and_keeps_its_parameters() -> None:
    execution = Execution("q1", "SELECT ? , ?", "default", 0.0, ["'1-7'", "2"])
    assert execution.bound() == {"1": "1-7", "2": 2}
    assert execution.to_aws("s3://lake/")["ExecutionParameters"] == ["'1-7'", "2"]
    again = Execution.from_record(execution.record())
    assert again.parameters == ["'1-7'", "2"]
    assert "ExecutionParameters" not in Execution("q2", "SELECT 1", "default", 0.0).to_aws("x")
