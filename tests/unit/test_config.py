"""Configuration: defaults, overrides, and a clear error for every kind of bad file."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from firelake.config import (
    DLQ_SCHEMA,
    EXAMPLE_CONFIG,
    ConfigError,
    FirelakeConfig,
    IngestConfig,
    KafkaConfig,
    LakeConfig,
    RouterConfig,
    SinkConfig,
    StreamConfig,
    describe,
    load_config,
    parse_config,
)
from firelake.testing import example_data, example_dict, to_toml, write_config


def test_example_config_loads_with_yle_streams() -> None:
    config = load_config(EXAMPLE_CONFIG, environ={})
    windows = {"plays-per-minute", "channel-viewers", "user-sessions"}
    assert set(config.streams) == {
        "raw-events",
        "playback-events",
        "page-events",
        "dlq",
        *windows,
        "window-late",
    }
    assert set(config.windows) == windows
    assert config.routers["clickstream"].routes["heartbeat"] == ("playback-events",)
    assert config.schema_of("dlq") is DLQ_SCHEMA
    assert config.schema_of("playback-events").time_field == "event_time"
    assert config.schema_of("raw-events") is None


def test_every_field_has_a_default_and_a_description() -> None:
    for cls in (
        KafkaConfig,
        IngestConfig,
        LakeConfig,
        StreamConfig,
        RouterConfig,
        SinkConfig,
        FirelakeConfig,
    ):
        for name, doc, _default in describe(cls):
            assert doc, f"{cls.__name__}.{name} has no description"
    assert parse_config({}).ingest.port == 4566


def test_environment_overrides_bootstrap_and_lake(tmp_path: Path) -> None:
    path = write_config(tmp_path / "f.toml", example_data())
    config = load_config(path, environ={"FIRELAKE_KAFKA_BOOTSTRAP": "h:1", "FIRELAKE_LAKE": "/x"})
    assert config.kafka.bootstrap == "h:1"
    assert config.lake_root == Path("/x")
    relative = load_config(path, environ={})
    assert relative.lake_root == tmp_path / "lake"


def test_toml_writer_round_trips() -> None:
    data = example_dict("127.0.0.1:9", "/lake", "s1")
    assert tomllib.loads(to_toml(data)) == data


def _error(data: dict) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse_config(data, source="f.toml", environ={})
    return info.value


def _with(path: str, value: object) -> dict:
    data = example_data()
    *parents, last = path.split(".")
    node = data
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = value
    return data


@pytest.mark.parametrize(
    ("path", "value", "key", "reason"),
    [
        ("kafka.port", "x", "kafka.port", "must be an integer"),
        ("kafka.prot", 1, "kafka.prot", "unknown key"),
        ("ingest.max_records", 501, "ingest.max_records", "between 1 and 500"),
        ("ingest.port", 70000, "ingest.port", "between 0 and 65535"),
        ("streams.raw-events.partitions", 0, "streams.raw-events.partitions", "between 1"),
        (
            "streams.raw-events.envelope",
            "zip",
            "streams.raw-events.envelope",
            "'batch' or 'single'",
        ),
        ("streams.raw-events.schema", "nope", "streams.raw-events.schema", "unknown schema"),
        ("schemas.page.fields.page", "text", "schemas.page.fields.page", "unknown type 'text'"),
        ("schemas.page.required", ["nope"], "schemas.page.required", "not in fields"),
        ("schemas.page.time_field", "page", "schemas.page.time_field", "timestamp column"),
        ("routers.clickstream.source", "ghost", "routers.clickstream.source", "unknown stream"),
        ("routers.clickstream.dlq", "raw-events", "routers.clickstream.dlq", "schema = 'dlq'"),
        (
            "routers.clickstream.routes.click",
            "ghost",
            "routers.clickstream.routes.click",
            "unknown stream",
        ),
        (
            "routers.clickstream.routes.click",
            [],
            "routers.clickstream.routes.click",
            "non-empty list",
        ),
        ("schemas.page.fields.page", "decimal(3,4)", "schemas.page.fields.page", "scale"),
        ("schemas.page.fields.page", "map<list<int>,int>", "schemas.page.fields.page", "scalar"),
        ("schemas.page.fields.page", "struct<a:int", "schemas.page.fields.page", "expected"),
        ("schemas.page.fields.page", 5, "schemas.page.fields.page", "a type is a string"),
        ("sinks.page.unknown_fields", "stash", "sinks.page.unknown_fields", "'drop' or 'keep'"),
        ("sinks.page.prefix", "x=!{timestamp:QQ}/", "sinks.page.prefix", "'QQ'"),
        ("sinks.page.prefix", "dt=!{timestamp:yyyy}", "sinks.page.prefix", "ends with '/'"),
        (
            "sinks.page.error_prefix",
            "e/!{firehose:random-string}/",
            "sinks.page.error_prefix",
            "not supported",
        ),
        ("sinks.page.destination", "gs://b/x", "sinks.page.destination", "s3://"),
        ("sinks.page.destination", "s3:///x", "sinks.page.destination", "bucket"),
        ("sinks.page.memory_limit_bytes", 10, "sinks.page.memory_limit_bytes", ">="),
        ("sinks.page.max_open_partitions", 0, "sinks.page.max_open_partitions", "between"),
        ("sinks.page.column_to_json_key", {"a": 1}, "sinks.page.column_to_json_key", "column ="),
        ("sinks.page.table", "playback", "sinks.page.table", "written by sink"),
        ("sinks.page.table", "bad-name", "sinks.page.table", "letters, digits and _"),
        ("sinks.page.max_bytes", 10, "sinks.page.max_bytes", "between"),
        ("sinks.page.max_seconds", 901, "sinks.page.max_seconds", "between 0 and 900"),
        ("sinks.page.compression", "lzma", "sinks.page.compression", "zstd"),
        ("sinks.page.max_seconds", True, "sinks.page.max_seconds", "must be a number"),
        ("nonsense", {}, "nonsense", "unknown section"),
    ],
)
def test_bad_config_names_file_key_and_reason(
    path: str, value: object, key: str, reason: str
) -> None:
    error = _error(_with(path, value))
    assert error.source == "f.toml"
    assert error.key == key
    assert reason in error.reason, error.reason
    assert str(error).startswith(f"f.toml: {key}: ")


def test_unreadable_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[kafka\nport = 1\n")
    with pytest.raises(ConfigError) as info:
        load_config(bad)
    assert info.value.key == "(syntax)"
    assert str(bad) in str(info.value)


# ------------------------------------------------------------------ router settings (issue 4)


@pytest.mark.parametrize(
    ("setting", "value", "key", "phrase"),
    [
        ("batch_size", 0, "routers.clickstream.batch_size", "between 1 and 100000"),
        ("starting_position", "NOW", "routers.clickstream.starting_position", "TRIM_HORIZON"),
        ("starting_position", "AT_TIMESTAMP", "routers.clickstream.starting_timestamp", "ISO"),
        ("max_retry_attempts", -2, "routers.clickstream.max_retry_attempts", "between -1"),
        ("max_record_age_seconds", 0.5, "routers.clickstream.max_record_age_seconds", "between 1"),
        ("transform", "nocolon", "routers.clickstream.transform", "module:function"),
        ("filters", [{"device": "tv"}], "routers.clickstream.filters[0].device", "non-empty list"),
        ("rules", [{"pattern": {"a": [1]}}], "routers.clickstream.rules[0]", "'streams'"),
        ("source", ["raw-events", "ghost"], "routers.clickstream.source", "unknown stream"),
    ],
)
def test_router_settings_are_checked(setting: str, value: object, key: str, phrase: str) -> None:
    from firelake.config import ConfigError, parse_config
    from firelake.testing import example_data

    data = example_data()
    data["routers"]["clickstream"][setting] = value
    with pytest.raises(ConfigError) as caught:
        parse_config(data, source="<test>", environ={})
    assert caught.value.key == key
    assert phrase in caught.value.reason


# The pattern examples are single files; the seed systems are folders with a firelake.toml.
SHIPPED_EXAMPLES = sorted(
    [*EXAMPLE_CONFIG.parent.parent.glob("*.toml"), *EXAMPLE_CONFIG.parent.parent.glob("*/*.toml")]
)


@pytest.mark.parametrize("path", SHIPPED_EXAMPLES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_shipped_example_loads_and_renames_consistently(path: Path) -> None:
    data = tomllib.loads(path.read_text(encoding="utf-8"))
    load_config(path, environ={})
    renamed = example_dict("127.0.0.1:9", "/lake", "zz", data)
    config = parse_config(renamed, environ={})  # every reference still resolves
    assert all(name.endswith("-zz") for name in config.streams)
    assert all(name.endswith("-zz") for name in config.routers)


# ------------------------------------------------------------------ sinks (issue 5)


def test_schema_types_cover_the_firehose_set_and_normalise() -> None:
    data = example_data()
    data["schemas"]["page"]["fields"]["page"] = "struct< a : decimal(10, 2), b:list<date> >"
    data["schemas"]["page"]["fields"]["referrer"] = "MAP<string,int>"
    config = parse_config(data, environ={})
    assert config.schemas["page"].field_named("page").type == "struct<a:decimal(10,2),b:list<date>>"
    assert config.schemas["page"].field_named("referrer").type == "map<string,int>"


def test_a_sink_may_read_a_stream_without_schema_and_set_every_firehose_field() -> None:
    data = example_data()
    data["sinks"]["raw"] = {
        "stream": "raw-events",
        "table": "raw",
        "destination": "s3://bucket/lake",
        "prefix": "product=!{partitionKeyFromQuery:product}/dt=!{timestamp:yyyy-MM-dd}/",
        "error_prefix": "errors/!{firehose:error-output-type}/!{timestamp:yyyy/MM/dd}/",
        "unknown_fields": "keep",
        "case_insensitive": True,
        "dots_to_underscores": True,
        "column_to_json_key": {"user_id": "userId"},
        "archive": True,
        "memory_limit_bytes": 64 * 1024 * 1024,
        "max_open_partitions": 1000,
    }
    sink = parse_config(data, environ={}).sinks["raw"]
    assert sink.destination == "s3://bucket/lake"
    assert dict(sink.column_to_json_key) == {"user_id": "userId"}
    assert sink.archive and sink.max_open_partitions == 1000


def test_require_bootstrap_never_guesses_the_local_broker(tmp_path) -> None:
    import dataclasses

    import pytest

    from firelake.testing import example_config

    config = example_config("10.0.0.1:9092", tmp_path)
    assert config.require_bootstrap() == "10.0.0.1:9092"
    assert config.require_bootstrap("127.0.0.1:1") == "127.0.0.1:1"
    empty = dataclasses.replace(config, kafka=dataclasses.replace(config.kafka, bootstrap=""))
    assert empty.bootstrap.startswith("127.0.0.1:")  # the local broker's port, a guess
    with pytest.raises(ValueError, match=r"kafka\.bootstrap is empty; start the broker first"):
        empty.require_bootstrap()
