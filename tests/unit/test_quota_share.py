"""Ingest workers share each shard's write quota: together they never admit more than one."""

from __future__ import annotations

from api.server import aws_options
from firelake.testing import example_config


def test_each_worker_holds_an_equal_share_of_the_shard_quota(tmp_path) -> None:  # type: ignore[no-untyped-def]
    for workers in (1, 2, 3):
        config = example_config(
            "127.0.0.1:1", tmp_path, ingest={"workers": workers, "shard_write_quota": True}
        )
        quota = aws_options(config).quota
        assert quota is not None
        assert quota.records_per_s * workers <= 1000 and quota.bytes_per_s * workers <= 1 << 20
        assert quota.records_per_s == 1000 // workers
    config = example_config("127.0.0.1:1", tmp_path, ingest={"workers": 2})
    assert aws_options(config).quota is None  # off unless asked for
