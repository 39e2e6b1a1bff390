"""Offset paging of the Glue and Athena listings (one helper), and the lake services."""

from __future__ import annotations

from pathlib import Path

import pytest

from api.lake_services import LakeServices
from api.protocol import AwsError, page
from firelake.testing import example_config


def test_pages_follow_the_token_to_the_end() -> None:
    items = list(range(7))
    first = page({"MaxResults": 3}, items, "Ids", limit=50, code="InvalidInputException")
    assert first == {"Ids": [0, 1, 2], "NextToken": "3"}
    second = page({"MaxResults": 3, "NextToken": "3"}, items, "Ids", limit=50, code="X")
    third = page(
        {"MaxResults": 3, "NextToken": second["NextToken"]}, items, "Ids", limit=50, code="X"
    )
    assert second["Ids"] == [3, 4, 5] and third == {"Ids": [6]}
    assert page({}, items, "Ids", limit=5, code="X") == {"Ids": [0, 1, 2, 3, 4], "NextToken": "5"}
    # Athena's listings take MaxResults 0 as "the most".
    assert page({"MaxResults": 0}, items, "Ids", limit=50, low=0, code="X") == {"Ids": items}


def test_a_bad_token_or_size_is_refused_with_the_services_code() -> None:
    with pytest.raises(AwsError) as caught:
        page({"NextToken": "abc"}, [1], "Ids", limit=50, code="InvalidRequestException")
    assert caught.value.code == "InvalidRequestException" and "abc" in caught.value.message
    with pytest.raises(AwsError):
        page({"MaxResults": 101}, [1], "Ids", limit=100, code="InvalidInputException")
    with pytest.raises(AwsError):
        page({"MaxResults": 0}, [1], "Ids", limit=100, code="InvalidInputException")


def test_the_lake_destination_is_made_once(tmp_path: Path) -> None:
    lake = LakeServices(example_config("127.0.0.1:1", tmp_path))
    assert lake.destination() is lake.destination()


def test_glue_get_tables_reads_versions_of_its_page_only(tmp_path: Path, monkeypatch) -> None:
    import asyncio

    import pyarrow as pa
    import pyarrow.parquet as pq

    import api.glue_lake as glue_lake
    from firelake.config import load_config
    from firelake.testing import write_config

    lake = tmp_path / "lake"
    for table in ("a", "b", "c"):
        path = lake / table / "dt=2026-11-29" / "hour=08" / "f.parquet"
        path.parent.mkdir(parents=True)
        pq.write_table(pa.table({"x": [1]}), path)
    config = load_config(
        write_config(tmp_path / "firelake.toml", {"lake": {"root": str(lake)}}), environ={}
    )
    read: list[str] = []
    real = glue_lake.record_versions
    monkeypatch.setattr(
        glue_lake,
        "record_versions",
        lambda d, info, write: read.append(info.name) or real(d, info, write=write),
    )
    services = LakeServices(config, engines=1)
    api = glue_lake.LakeGlueApi(services)
    try:
        first = asyncio.run(api.get_tables({"MaxResults": 2}, None))  # type: ignore[arg-type]
        assert [t["Name"] for t in first["TableList"]] == ["a", "b"] and read == ["a", "b"]
        rest = asyncio.run(api.get_tables({"NextToken": first["NextToken"]}, None))  # type: ignore[arg-type]
        assert [t["Name"] for t in rest["TableList"]] == ["c"] and "NextToken" not in rest
    finally:
        services.close()
