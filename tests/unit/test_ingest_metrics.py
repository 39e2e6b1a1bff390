"""The ingest's record counter: one series per API and result."""

from __future__ import annotations

from streams.ingest_metrics import IngestMetrics


def value(metrics: IngestMetrics, api: str, result: str) -> float | None:
    return metrics.registry.get_sample_value(
        "firelake_ingest_records_total", {"api": api, "result": result}
    )


def test_records_are_counted_by_api_and_result() -> None:
    metrics = IngestMetrics(lambda: 0)
    metrics.count_records("kinesis", [None, "ProvisionedThroughputExceededException", None])
    metrics.count_records("firehose", ["ServiceUnavailableException", None])
    metrics.count_results(
        {
            "failed_record_count": 1,
            "records": [{"sequence_number": "1"}, {"error_code": "InternalFailure"}],
        }
    )
    assert value(metrics, "kinesis", "ok") == 2
    assert value(metrics, "kinesis", "ProvisionedThroughputExceededException") == 1
    assert value(metrics, "firehose", "ok") == 1
    assert value(metrics, "firehose", "ServiceUnavailableException") == 1
    assert value(metrics, "native", "ok") == 1
    assert value(metrics, "native", "InternalFailure") == 1
    assert value(metrics, "aws", "ok") is None
