"""The ``firelake`` command line: run the pipeline, its parts, and query the lake."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
from collections.abc import Sequence

from firelake.config import (
    ConfigError,
    FirelakeConfig,
    IngestConfig,
    KafkaConfig,
    LakeConfig,
    MetricsConfig,
    QueryConfig,
    RouterConfig,
    SinkConfig,
    StreamConfig,
    UnknownStreamError,
    WindowConfig,
    describe,
    example_config_path,
    load_config,
    parse_config,
    read_config_data,
)
from firelake.log import setup_logging

__all__ = ["build_parser", "main"]

log = logging.getLogger("firelake")


class UsageError(ValueError):
    """A command line that parses but cannot be carried out as given."""


def _find_local_broker(args: argparse.Namespace) -> None:
    """Without a configured bootstrap, use the local broker ``firelake up`` (or ``firelake
    kafka start``) runs for this configuration: its pid file in ``kafka.data_dir`` is the
    discovery, so a service started by hand finds the broker ``up`` started."""
    from firelake.broker import local_kafka

    if os.environ.get("FIRELAKE_KAFKA_BOOTSTRAP"):
        return
    data, source, base_dir = read_config_data(args.config)
    kafka = parse_config({"kafka": data.get("kafka", {})}, source=source, base_dir=base_dir)
    if kafka.kafka.bootstrap:
        return
    broker = local_kafka(kafka.kafka_data_dir, kafka.kafka.port)
    if broker.is_running():
        os.environ["FIRELAKE_KAFKA_BOOTSTRAP"] = broker.bootstrap


def _config(args: argparse.Namespace) -> FirelakeConfig:
    _find_local_broker(args)
    return load_config(args.config)


def _pipeline_config(args: argparse.Namespace) -> FirelakeConfig:
    """The configuration of commands that run routers and sinks.

    A stream created through the Kinesis API lives in the registry, not in the file; a
    router or sink may still name it, so a stream the file does not declare is looked up
    there before the file is refused.
    """
    _find_local_broker(args)
    try:
        return load_config(args.config)
    except UnknownStreamError as exc:
        refused = exc
    from streams.registry import load_registry

    data, _, _ = read_config_data(args.config)
    bootstrap = parse_config({"kafka": data.get("kafka", {})}).bootstrap
    registry = load_registry(bootstrap)
    if not registry.streams:
        raise refused
    extra = {name: entry.stream_config() for name, entry in registry.streams.items()}
    return load_config(args.config, extra_streams=extra)


def local_broker(config: FirelakeConfig, brokers: int | None = None):  # -> LocalBroker/Cluster
    """The broker (or the local cluster ``firelake kafka start --brokers N`` made in
    ``kafka.data_dir``) Firelake starts itself when no bootstrap address is configured."""
    from firelake.broker import local_kafka

    return local_kafka(config.kafka_data_dir, config.kafka.port, brokers)


# --------------------------------------------------------------------------- commands


def cmd_up(args: argparse.Namespace) -> int:
    from firelake.supervisor import (
        BrokerProcess,
        HealthServer,
        ServiceSpec,
        Supervisor,
        pipeline_services,
    )
    from streams.topics import ensure_topics

    config = _pipeline_config(args)
    broker = None
    bootstrap = config.bootstrap
    if not config.kafka.bootstrap:
        broker = local_broker(config)
        if broker.is_running():
            log.info("using the local broker already running at %s", broker.bootstrap)
            broker = None
        else:
            log.info(
                "starting Kafka %s on 127.0.0.1:%d (first run fetches its jars with Maven)",
                "broker",
                config.kafka.port,
            )
            broker_process = BrokerProcess(broker).start()
    stopping = False

    def request_stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    supervisor = None
    health = None
    try:
        created = ensure_topics(config, bootstrap)
        if created:
            log.info("created streams: %s", ", ".join(created))
        services = pipeline_services(config, args.config, bootstrap, not args.no_serving)
        if broker is not None:
            # The broker up started is supervised like every service, and stops last.
            kafka = ServiceSpec("kafka", (), spawn=BrokerProcess(broker).start, stop_last=True)
            services.insert(0, kafka)
        supervisor = Supervisor(
            services,
            max_restarts=args.max_restarts,
            restart_window_seconds=args.restart_window,
            state_file=up_state_file(config),
        )
        if broker is not None:
            supervisor.children[0].process = broker_process
        health = HealthServer(supervisor, args.health_port).start()
        supervisor.extra = {
            "bootstrap": bootstrap,
            "health": f"http://127.0.0.1:{health.port}/health",
            "pid": os.getpid(),
        }
        supervisor.start()
        lake = config.lake_url
        print(
            "\nFirelake is up.\n"
            f"  Kafka bootstrap : {bootstrap}\n"
            f"  Ingest API      : http://{config.ingest.host}:{config.ingest.port}"
            "/v1/streams/{stream}/records\n"
            f"  Streams         : {', '.join(config.streams)}\n"
            f"  Lake            : {lake}\n"
            '  Query           : firelake query "SELECT count(*) FROM playback"\n'
            f"  Query API       : http://{config.query.host}:{config.query.port}/v1/query\n"
            f"  Health          : http://127.0.0.1:{health.port}/health\n"
            "Press Ctrl-C to stop.\n",
            flush=True,
        )
        supervisor.run_until(lambda: stopping, exit_on_failure=args.exit_on_failure)
    finally:
        if supervisor is not None:
            supervisor.stop()  # the broker last
        if health is not None:
            health.stop()
        if broker is not None:
            log.info("stopping the Kafka broker")
            broker.stop()
    return 0 if supervisor is not None and not supervisor.failed else 1


def up_state_file(config: FirelakeConfig):  # -> pathlib.Path
    """Where ``firelake up`` keeps its services' state (next to the broker's data)."""
    return config.kafka_data_dir.parent / "up.json"


def cmd_kafka(args: argparse.Namespace) -> int:
    from firelake.broker import fetch_kafka

    config = _config(args)
    broker = local_broker(config, args.brokers if args.action == "start" else None)
    if args.action == "fetch":
        print(fetch_kafka())
    elif args.action == "start":
        if broker.is_running():
            print(f"already running at {broker.bootstrap}")
        else:
            broker.start(timeout=180)
            print(f"Kafka running at {broker.bootstrap} (data: {broker.data_dir})")
    elif args.action == "stop":
        broker.stop()
        print("stopped")
    else:
        for key, value in broker.status().items():
            print(f"{key}: {value}")
    return 0


def cmd_streams(args: argparse.Namespace) -> int:
    from streams.topics import ensure_topics

    config = _config(args)
    if args.action == "create":
        created = ensure_topics(config, config.bootstrap)
        print(f"created: {', '.join(created) or '(none; all existed and match)'}")
    else:
        for spec in config.streams.values():
            print(
                f"{spec.name}\tpartitions={spec.partitions}\tenvelope={spec.envelope}"
                f"\tschema={spec.schema or '-'}\tretention_hours={spec.retention_hours}"
            )
    return 0


def cmd_ingest(args: argparse.Namespace) -> int:
    from api.server import serve

    config = _config(args)
    _run_async(serve(config, port=args.port))
    return 0


def cmd_router(args: argparse.Namespace) -> int:
    from agents.router import run_router

    config = _pipeline_config(args)
    if args.name not in config.routers:
        raise ConfigError(
            config.source,
            f"routers.{args.name}",
            f"no such router (configured: {', '.join(config.routers) or 'none'})",
        )
    return run_router(config, args.name)


def _dlq_stream(config: FirelakeConfig, name: str | None) -> str:
    if name is None:
        name = next((r.dlq for r in config.routers.values()), None)
    if name is None or name not in config.streams:
        raise ConfigError(config.source, "streams", f"no DLQ stream {name!r}")
    return name


def cmd_dlq(args: argparse.Namespace) -> int:
    from agents.dlq_tools import Selection, read_dlq, redrive, summarize

    config = _config(args)
    stream = _dlq_stream(config, args.stream)
    bootstrap = config.bootstrap
    selection = Selection(args.reason, args.since, args.until)
    if args.action == "redrive":
        report = redrive(
            config, bootstrap, stream, selection, rate=args.rate, show_progress=not args.quiet
        )
        print(
            f"redriven {report.redriven}; already redriven before {report.skipped_already}; "
            f"not selected {report.not_selected}; {report.seconds:.1f}s"
        )
        return 0
    partitions = config.streams[stream].partitions
    records = [r for r in read_dlq(bootstrap, stream, partitions) if selection(r.record)]
    if args.action == "ls":
        print(f"{'count':>8}  {'error_type':<20} source stream")
        for (error_type, topic), count in summarize(records).most_common():
            print(f"{count:>8}  {error_type:<20} {topic}")
        print(f"{len(records):>8}  total in {stream}")
        return 0
    for item in records[: args.limit]:
        print(json.dumps(item.record, ensure_ascii=False))
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from agents.status import render, router_status
    from firelake.supervisor import read_state, render_state
    from sinks.status import render_sinks, sink_status

    config = _config(args)
    state = read_state(up_state_file(config))
    print(render_state(state))
    print(render_sinks(sink_status(config, config.bootstrap)))
    print(render(router_status(config, config.bootstrap)))
    return 0 if state is None or state.get("healthy", True) else 1


def cmd_sink(args: argparse.Namespace) -> int:
    from sinks.fleet import run_sink_fleet
    from sinks.sink import run_sinks
    from streams.registry import load_registry
    from streams.resources import registry_config

    config = _pipeline_config(args)
    if args.all:
        # Declared sinks, plus one per Firehose delivery stream, as they come and go.
        port = config.metrics.base_port if args.metrics_port is None else args.metrics_port
        _run_async(run_sink_fleet(config, metrics_port=port))
        return 0
    config = registry_config(config, load_registry(config.bootstrap))
    if args.name not in config.sinks:
        raise ConfigError(
            config.source,
            f"sinks.{args.name}",
            f"no such sink (configured: {', '.join(config.sinks) or 'none'})",
        )
    _run_async(run_sinks(config, [args.name]))
    return 0


def cmd_send(args: argparse.Namespace) -> int:
    from streams.loadgen import send

    config = _config(args)
    url = args.url or f"http://{config.ingest.host}:{config.ingest.port}"
    stream = args.stream or next(
        (r.source for r in config.routers.values()), next(iter(config.streams), "")
    )
    if args.profile:
        from streams.loadgen import send_shaped
        from streams.loadshape import shape_for

        shape = shape_for(args.profile, args.duration, args.scale)
        report = asyncio.run(
            send_shaped(
                url,
                stream,
                shape,
                count=args.count,
                batch_size=args.batch_size,
                invalid_ratio=args.invalid_ratio,
                seed=args.seed,
                show_progress=not args.quiet,
            )
        )
        print(report)
        return 0
    report = asyncio.run(
        send(
            url,
            stream,
            rate=args.rate,
            count=args.count,
            duration=args.duration,
            batch_size=args.batch_size,
            invalid_ratio=args.invalid_ratio,
            seed=args.seed,
            show_progress=not args.quiet,
        )
    )
    print(report)
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    config = _config(args)
    if args.from_archive:
        # Rebuild a stream from a sink's raw archive (Firehose S3 backup) instead.
        if args.stream or not args.into:
            raise UsageError("replay --from-archive TABLE takes --into STREAM [--from] [--to]")
        from streams.replay import parse_position, replay_archive

        archive = _archive(config, args.from_archive)
        if args.into not in config.streams:
            raise UsageError(
                f"unknown stream {args.into!r} (declared: {', '.join(sorted(config.streams))})"
            )
        target = config.streams[args.into]
        source = config.streams.get(archive.stream)
        report = replay_archive(
            config.bootstrap,
            archive.files,
            args.into,
            target.partitions,
            archive.stream,
            source.partitions if source is not None else None,
            parse_position(args.from_) if args.from_ else None,
            parse_position(args.to) if args.to else None,
            batched=target.envelope == "batch",
            progress=not args.quiet,
        )
        print(asyncio.run(report))
        return 0
    if not args.stream or not args.from_:
        raise UsageError("replay needs a stream and --from (a time, @epoch-ms or an offset)")
    from streams.replay import run_replay

    report = run_replay(
        config.bootstrap, args.stream, args.from_, args.to, args.into, progress=not args.quiet
    )
    print(report)
    return 0


def _test_bootstrap(config: FirelakeConfig):  # -> (bootstrap, broker to stop or None)
    """The broker replay tests use: the configured one, else the local one (started)."""
    if config.kafka.bootstrap:
        return config.kafka.bootstrap, None
    broker = local_broker(config)
    if broker.is_running():
        return broker.bootstrap, None
    broker.start(timeout=180)
    return broker.bootstrap, broker


def cmd_test(args: argparse.Namespace) -> int:
    from cases.command import run_test_command

    bootstrap, broker = _test_bootstrap(_config(args))
    cases = args.cases
    if not cases and getattr(args, "example", None):
        cases = [str(example_config_path(args.example).parent / "cases")]
    try:
        return run_test_command(
            cases,
            bootstrap,
            pattern=args.k,
            update=args.update,
            junit_xml=args.junit_xml,
            speed=args.speed,
            partitions=args.partitions,
            keep=args.keep,
        )
    finally:
        if broker is not None:
            broker.stop()


def _archive(config: FirelakeConfig, table: str):  # -> sinks.archive.TableArchive
    from sinks.archive import table_archive

    try:
        return table_archive(config, table)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc


def cmd_record(args: argparse.Namespace) -> int:
    from cases.record import run_record

    config = _config(args)
    schema = config.schema_of(args.stream) if args.stream in config.streams else None
    files = None
    if args.from_archive:
        archive = _archive(config, args.from_archive)
        if archive.stream != args.stream:
            raise UsageError(
                f"table {args.from_archive!r} archives stream {archive.stream!r}, "
                f"not {args.stream!r}"
            )
        files = archive.files
    report = run_record(
        config.bootstrap,
        args.stream,
        args.out,
        start=args.from_,
        end=args.to,
        time_field=schema.time_field if schema is not None else "",
        max_events=args.max_events,
        max_bytes=args.max_bytes,
        progress=not args.quiet,
        archive=files,
    )
    print(report)
    return 0


def cmd_compact(args: argparse.Namespace) -> int:
    from sinks.compaction import compact
    from sinks.destinations import destination_for
    from sinks.progress import ProgressStore

    config = _config(args)
    writers = [s for s in config.sinks.values() if s.table == args.table]
    if not writers:
        raise UsageError(f"no sink writes table {args.table!r}")
    spec = writers[0]
    destination = destination_for(config, spec)
    report = compact(
        destination,
        args.table,
        [ProgressStore(destination, s.name) for s in writers],
        target_bytes=spec.compact_target_bytes,
        grace_seconds=spec.compact_grace_seconds,
        min_age_seconds=args.min_age,
        folders=args.partition,
        compression=spec.compression,
    )
    print(f"{args.table}: {report}")
    return 0


def _params(pairs: Sequence[str]) -> dict[str, str]:
    """``--param name=value`` pairs as a dict."""
    values: dict[str, str] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise UsageError(f"--param {pair!r}: write name=value")
        values[name] = value
    return values


def cmd_query(args: argparse.Namespace) -> int:
    from queries.engine import QueryEngine, format_csv, format_json, format_table
    from queries.export import export_file, export_table
    from queries.saved import bind_parameters, load_saved, saved_dir
    from sinks.destinations import lake_destination

    config = _config(args)
    folder = saved_dir(config)
    saved = load_saved([folder])
    if args.list:
        for query in saved.values():
            params = " ".join(
                f"{p.name}:{p.type}" + ("" if p.required else f"={p.default}")
                for p in query.parameters
            )
            kind = "view" if query.view else "query"
            print(f"{query.name:<28} {kind:<5} {params:<32} {query.description}")
        if not saved:
            print(f"no saved queries in {folder}")
        return 0
    values: dict[str, object] = dict(_params(args.param))
    if args.saved:
        if args.sql:
            raise UsageError("give SQL or --saved NAME, not both")
        if args.saved not in saved:
            known = ", ".join(saved) or "none"
            raise UsageError(f"no saved query {args.saved!r} in {folder} (saved: {known})")
        sql = saved[args.saved].sql
        values = bind_parameters(saved[args.saved], values)
    elif args.sql:
        sql = args.sql
    else:
        raise UsageError("give SQL, --saved NAME or --list")
    exporting = bool(args.output or args.into_table)
    views = {q.name: q.sql for q in saved.values() if q.view}
    # The lake root and every sink destination (local folders and S3 prefixes).
    with QueryEngine.for_config(config, views) as engine:
        result = engine.query(sql, max_rows=args.max_rows, params=values, arrow=exporting)
        existing = set(engine.tables)
    if exporting:
        if result.truncated or result.arrow is None:
            raise UsageError(
                f"the result has more than {args.max_rows or config.query.max_rows} rows; "
                "nothing exported (raise --max-rows)"
            )
        if args.output:
            report = export_file(result.arrow, args.output, args.output_format)
        else:
            report = export_table(
                result.arrow, lake_destination(config), args.into_table, existing, args.append
            )
        print(f"exported {report}")
    else:
        formatter = {"table": format_table, "csv": format_csv, "json": format_json}[args.format]
        print(formatter(result))
    # Like Athena's console: what the query cost, on stderr so piped output stays clean.
    scanned = (
        f"{result.bytes_scanned} bytes scanned, ${result.cost_usd:.8f} at $5/TB"
        if result.bytes_scanned is not None
        else "bytes scanned unknown"
    )
    print(
        f"({result.row_count} rows{' (truncated)' if result.truncated else ''}, "
        f"{result.elapsed:.3f}s, {scanned})",
        file=sys.stderr,
    )
    return 0


def cmd_describe(args: argparse.Namespace) -> int:
    from datetime import UTC, datetime

    from queries.catalog import Lake, read_table
    from queries.versions import last_update, record_versions, table_columns

    config = _config(args)
    lake = Lake.of(config)
    located = lake.locate()
    info = read_table(located[args.table], args.table) if args.table in located else None
    if info is None:
        known = ", ".join(located) or "none"
        raise UsageError(f"no table {args.table!r} in {lake.describe()} (tables: {known})")
    # Describing crawls: the table's version record is extended with what the files show.
    versions = record_versions(info.destination, info)

    def when(epoch: float | None) -> str:
        if epoch is None:
            return "-"
        return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="seconds")

    print(f"table       {info.name}")
    print(f"location    {info.path}")
    print(f"rows        {info.rows}   files {info.files}   bytes {info.bytes}")
    print(f"partitions  {len(info.partitions)} ({'/'.join(info.layout) or 'none'})")
    print(f"updated     {when(last_update(info))}")
    print(f"version     {versions[-1].version if versions else '-'} of {len(versions)}")
    print("columns")
    for column in table_columns(info):
        print(f"  {column.name:<24} {column.type}{'  (partition)' if column.partition_key else ''}")
    for problem in info.problems:
        print(f"not read    {problem.path}: {problem.reason}")
    if args.versions:
        print("versions")
        for version in versions:
            change = ""
            if version.added:
                change += f" added {', '.join(version.added)}"
            if version.changed:
                change += f" changed {', '.join(version.changed)}"
            print(
                f"  v{version.version}  {when(version.created)}  "
                f"{len(version.columns)} columns{change or ' (first)'}"
            )
    return 0


def cmd_serve_queries(args: argparse.Namespace) -> int:
    from queries.service import serve_queries

    config = _config(args)
    _run_async(serve_queries(config, port=args.port))
    return 0


def cmd_tables(args: argparse.Namespace) -> int:
    from queries.catalog import Lake, list_tables

    config = _config(args)
    lake = Lake.of(config)
    tables = list_tables(lake)
    if not tables:
        print(f"no tables yet in {lake.describe()}")
        return 0
    print(f"{'table':<20} {'rows':>12} {'files':>7} {'partitions':>10} {'bytes':>12}")
    for table in tables:
        print(
            f"{table.name:<20} {table.rows:>12} {table.files:>7} "
            f"{len(table.partitions):>10} {table.bytes:>12}"
        )
    # Files a table holds but queries skip (a foreign file, a broken footer), and why.
    for table in tables:
        for problem in table.problems:
            print(f"{table.name}: {problem.path}: {problem.reason}")
    return 0


def cmd_app(args: argparse.Namespace) -> int:
    import dataclasses
    import importlib

    config = _config(args)
    if args.name not in config.apps:
        raise UsageError(
            f"no app {args.name!r} in {config.source} (apps: {', '.join(config.apps)})"
        )
    app = config.apps[args.name]
    if args.host:
        app = dataclasses.replace(app, host=args.host)
    importlib.import_module(app.module).run_app(config, app, args.port)
    return 0


def cmd_cdu(args: argparse.Namespace) -> int:
    from agents.cdu.command import run_cdu_command

    return run_cdu_command(args, _config(args))


def cmd_config(args: argparse.Namespace) -> int:
    if args.describe:
        for section, cls in (
            ("kafka", KafkaConfig),
            ("ingest", IngestConfig),
            ("lake", LakeConfig),
            ("query", QueryConfig),
            ("metrics", MetricsConfig),
            ("streams.<name>", StreamConfig),
            ("routers.<name>", RouterConfig),
            ("sinks.<name>", SinkConfig),
            ("windows.<name>", WindowConfig),
        ):
            print(f"[{section}]")
            for name, doc, default in describe(cls):
                if name != "name":
                    print(f"  {name} = {default!r}\n      {doc}")
        return 0
    config = _config(args)
    print(
        f"{config.source}: ok — {len(config.streams)} streams, {len(config.routers)} routers, "
        f"{len(config.sinks)} sinks; lake at {config.lake_url}"
    )
    return 0


def _window_of(config: FirelakeConfig, name: str) -> None:
    if name not in config.windows:
        raise ConfigError(
            config.source,
            f"windows.{name}",
            f"no such window (configured: {', '.join(config.windows) or 'none'})",
        )


def cmd_window(args: argparse.Namespace) -> int:
    from agents.window_agent import run_window

    config = _pipeline_config(args)
    _window_of(config, args.name)
    return run_window(config, args.name)


def _epoch_us(text: str | None) -> int | None:
    if text is None:
        return None
    from datetime import UTC, datetime

    try:
        moment = datetime.fromisoformat(text)
    except ValueError as exc:
        raise UsageError(f"{text!r} is not an ISO-8601 time: {exc}") from exc
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return round(moment.timestamp() * 1_000_000)


def cmd_windows(args: argparse.Namespace) -> int:
    from agents.windows import verify

    config = _config(args)
    _window_of(config, args.name)
    spec = config.windows[args.name]
    if args.action == "show":
        from agents.window_agent import open_windows

        rows = asyncio.run(open_windows(config, args.name))
        wanted = list(args.key or ())
        shown = 0
        for row in rows:
            if wanted and [str(row.get(k)) for k in spec.key][: len(wanted)] != wanted:
                continue
            print(json.dumps(row, ensure_ascii=False))
            shown += 1
        print(f"({shown} open windows)", file=sys.stderr)
        return 0
    from queries.engine import QueryEngine

    try:
        tables = verify.tables_of(config, args.name)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    limit = 100_000_000
    with QueryEngine.for_config(config) as engine:
        if args.action == "backfill":
            if not args.from_ or not args.to:
                raise UsageError("windows backfill needs --from and --to")
            sql = verify.expected_sql(
                config,
                args.name,
                tables,
                with_late=False,
                since_us=_epoch_us(args.from_),
                until_us=_epoch_us(args.to),
            )
            result = engine.query(sql, max_rows=limit)
            import time as _time

            from agents.window_agent import publish_results

            rows = verify.backfill_rows(
                spec, result.columns, result.rows, round(_time.time() * 1_000_000)
            )
            if args.dry_run:
                for row in rows:
                    print(json.dumps(row, ensure_ascii=False))
            else:
                sent = asyncio.run(publish_results(config, args.name, rows))
                print(f"backfilled {len(rows)} windows into {spec.output} ({sent} envelopes)")
            return 0
        since, until = _epoch_us(args.since), _epoch_us(args.until)
        if tables.source not in engine.tables:
            raise UsageError(f"no table {tables.source!r} in the lake yet: nothing to verify")
        live_rows = []
        if tables.output in engine.tables:  # else: no window has closed yet
            live = engine.query(verify.live_sql(spec, tables, since, None), max_rows=limit)
            live_rows = [dict(zip(live.columns, r, strict=True)) for r in live.rows]
        if until is None:
            until = max((r["window_end"] for r in live_rows), default=0)
        live_rows = [r for r in live_rows if r["window_end"] <= until]
        sql = verify.expected_sql(
            config,
            args.name,
            tables,
            with_late=tables.late in engine.tables,
            since_us=since,
            until_us=until,
        )
        expected = engine.query(sql, max_rows=limit)
    expected_rows = [dict(zip(expected.columns, r, strict=True)) for r in expected.rows]
    differences = verify.compare(spec, expected_rows, live_rows)
    for difference in differences:
        print(difference)
    print(
        f"{args.name}: {len(expected_rows)} windows recomputed, {len(live_rows)} emitted, "
        f"{len(differences)} differences"
    )
    return 1 if differences else 0


def _run_async(coro) -> None:
    """Run a service coroutine until SIGINT/SIGTERM, then let it clean up."""

    async def main() -> None:
        task = asyncio.ensure_future(coro)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, task.cancel)
        try:
            await task
        except asyncio.CancelledError:
            pass

    from firelake.aio import run

    run(main())


# --------------------------------------------------------------------------- parser


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``firelake`` command."""
    from agents.cdu.command import add_cdu_arguments

    parser = argparse.ArgumentParser(prog="firelake", description=__doc__)
    parser.add_argument("--log-level", default=None, help="DEBUG, INFO, WARNING or ERROR")
    sub = parser.add_subparsers(dest="command", required=True)

    def command(name: str, handler, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument(
            "--config",
            default=None,
            help="configuration file (default: ./firelake.toml, else the Yle example)",
        )
        p.add_argument(
            "--example", default=None, metavar="NAME", help="a shipped example instead: yle, cdu"
        )
        p.set_defaults(handler=handler)
        return p

    p = command("up", cmd_up, "run the whole pipeline: Kafka, ingest, routers, sinks")
    p.add_argument(
        "--no-serving",
        action="store_true",
        help="no ingest API and no query service (replay tests feed streams themselves)",
    )
    p.add_argument(
        "--exit-on-failure",
        action="store_true",
        help="exit non-zero as soon as a service is given up on (default: run on, unhealthy)",
    )
    p.add_argument("--max-restarts", type=int, default=5, help="restarts a service gets per window")
    p.add_argument(
        "--restart-window", type=float, default=300.0, help="the restart budget's window, s"
    )
    p.add_argument(
        "--health-port", type=int, default=0, help="port of /health on 127.0.0.1 (0: any free)"
    )
    p = command("kafka", cmd_kafka, "fetch, start, stop or inspect the local Kafka broker")
    p.add_argument("action", choices=["fetch", "start", "stop", "status"])
    p.add_argument(
        "--brokers",
        type=int,
        default=None,
        help="start: nodes of a local KRaft cluster (3: replicated topics); default 1",
    )
    p = command("streams", cmd_streams, "create (or check) the configured streams, or list them")
    p.add_argument("action", choices=["create", "list"])
    p = command("ingest", cmd_ingest, "run the HTTP ingest service")
    p.add_argument("--port", type=int, default=None, help="override ingest.port (0: any free)")
    p = command("router", cmd_router, "run one router agent")
    p.add_argument("--name", required=True, help="router name from the configuration")
    p = command("dlq", cmd_dlq, "list, show or redrive dead-lettered events")
    p.add_argument("action", choices=["ls", "show", "redrive"])
    p.add_argument("--stream", default=None, help="DLQ stream (default: the first router's)")
    p.add_argument("--reason", default=None, help="only this error_type")
    p.add_argument("--since", default=None, help="only failed_at >= this (canonical time)")
    p.add_argument("--until", default=None, help="only failed_at < this (canonical time)")
    p.add_argument("--limit", type=int, default=10, help="records `show` prints")
    p.add_argument("--rate", type=float, default=1000.0, help="redrive events per second")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    command("status", cmd_status, "routers' consumer lag per partition and live counters")
    p = command("window", cmd_window, "run one window agent")
    p.add_argument("--name", required=True, help="window name from the configuration")
    p = command("windows", cmd_windows, "show open windows, verify against the lake, backfill")
    p.add_argument("action", choices=["show", "verify", "backfill"])
    p.add_argument("name", help="window name from the configuration")
    p.add_argument("--key", action="append", help="show: only this key value (repeatable)")
    p.add_argument("--since", default=None, help="verify: windows starting at or after (ISO)")
    p.add_argument("--until", default=None, help="verify: windows ending at or before (ISO)")
    p.add_argument("--from", dest="from_", default=None, help="backfill: first time (ISO)")
    p.add_argument("--to", default=None, help="backfill: end time, exclusive (ISO)")
    p.add_argument("--dry-run", action="store_true", help="backfill: print the rows only")
    p = command("sink", cmd_sink, "run Parquet sinks")
    group = p.add_mutually_exclusive_group(required=True)
    group.add_argument("--name", help="sink name from the configuration")
    group.add_argument("--all", action="store_true", help="every configured sink")
    p.add_argument(
        "--metrics-port",
        type=int,
        default=None,
        help="with --all: Prometheus /metrics port (default [metrics] base_port; 0: none)",
    )
    p = command("send", cmd_send, "send realistic sample events to the ingest service")
    p.add_argument("--url", default=None, help="ingest base URL (default from the configuration)")
    p.add_argument(
        "--stream", default=None, help="target stream (default: the first router's source)"
    )
    p.add_argument("--rate", type=float, default=1000.0, help="events per second")
    p.add_argument("--count", type=int, default=10_000, help="stop after this many events")
    p.add_argument("--duration", type=float, default=60.0, help="stop after this many seconds")
    p.add_argument("--batch-size", type=int, default=500, help="records per request (1-500)")
    p.add_argument("--invalid-ratio", type=float, default=0.0, help="share of bad events (0-1)")
    p.add_argument("--seed", type=int, default=None, help="seed for reproducible events")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument(
        "--profile",
        choices=["yle"],
        default=None,
        help="a load shape instead of --rate: yle = one day in --duration (prime time "
        "10 000 events/s, bursts of 42 000/s), throttling honoured",
    )
    p.add_argument("--scale", type=float, default=1.0, help="with --profile: rate multiplier")
    p = command("replay", cmd_replay, "re-deliver a time or offset range of a stream")
    p.add_argument("stream", nargs="?", help="the stream to read")
    p.add_argument(
        "--from",
        dest="from_",
        default=None,
        help="ISO time, @epoch-ms, offset, earliest or latest (inclusive)",
    )
    p.add_argument("--to", default=None, help="same forms, exclusive (default: the end now)")
    p.add_argument("--into", default=None, help="target stream (default: the same stream)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument(
        "--from-archive",
        default=None,
        metavar="TABLE",
        help="instead: send a sink's raw archive of TABLE into --into (keys, partitions and "
        "order kept, --from/--to by ingest time, a rerun adds nothing)",
    )
    p = command("test", cmd_test, "run stream replay test cases (folders with case.toml)")
    p.add_argument(
        "cases",
        nargs="*",
        help="case folders, or folders above them (default: cases, or the --example's)",
    )
    p.add_argument("-k", default=None, metavar="PATTERN", help="only cases whose name matches")
    p.add_argument("--update", action="store_true", help="rewrite expected files from results")
    p.add_argument("--junit-xml", default=None, metavar="FILE", help="write JUnit XML to FILE")
    p.add_argument("--speed", type=float, default=None, help="replay at X times the recorded pace")
    p.add_argument(
        "--partitions", type=int, default=None, help="run every stream with N partitions"
    )
    p.add_argument("--keep", action="store_true", help="keep each case's folder and lake")
    p = command("record", cmd_record, "record a range of a stream as a replay case's input")
    p.add_argument("stream", help="the stream to record")
    p.add_argument(
        "--from", dest="from_", default="earliest", help="ISO time, @epoch-ms, offset, earliest"
    )
    p.add_argument("--to", default=None, help="same forms, exclusive (default: the end now)")
    p.add_argument("--out", required=True, help="the file, e.g. CASE/input/STREAM.jsonl")
    p.add_argument("--max-events", type=int, default=1_000_000, help="most events recorded")
    p.add_argument("--max-bytes", type=int, default=256 * 1024 * 1024, help="most bytes written")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument(
        "--from-archive",
        default=None,
        metavar="TABLE",
        help="record from the raw archive of TABLE's sink (which reads STREAM) instead",
    )
    p = command("compact", cmd_compact, "merge a lake table's small files, atomically")
    p.add_argument("table", help="the table (its sink's destination and settings apply)")
    p.add_argument(
        "--partition",
        action="append",
        default=[],
        help="only folders under this one, e.g. dt=2026-11-29/hour=08 (repeatable)",
    )
    p.add_argument(
        "--min-age",
        type=float,
        default=3600.0,
        help="skip folders with a file newer than this many seconds (open partitions)",
    )
    p = command("query", cmd_query, "run SQL or a saved query over the lake with DuckDB")
    p.add_argument("sql", nargs="?", help="the SQL; each lake table is a view")
    p.add_argument("--format", choices=["table", "csv", "json"], default="table")
    p.add_argument("--saved", default=None, metavar="NAME", help="run this saved query")
    p.add_argument(
        "--param", action="append", default=[], metavar="NAME=VALUE", help="a $NAME parameter"
    )
    p.add_argument("--list", action="store_true", help="list the saved queries and views")
    p.add_argument("--max-rows", type=int, default=None, help="most rows (default [query])")
    p.add_argument("--output", default=None, metavar="FILE", help="write the result to FILE")
    p.add_argument(
        "--output-format",
        choices=["parquet", "csv", "json"],
        default=None,
        help="format of --output (default: its extension)",
    )
    p.add_argument(
        "--into-table",
        default=None,
        metavar="TABLE",
        help="write the result into the lake as a new table (CTAS)",
    )
    p.add_argument("--append", action="store_true", help="--into-table may add to a table")
    command("tables", cmd_tables, "list lake tables with rows, files and partitions")
    p = command("describe", cmd_describe, "a lake table's columns, partitions and versions")
    p.add_argument("table", help="the table")
    p.add_argument("--versions", action="store_true", help="list every schema version")
    p = command("serve-queries", cmd_serve_queries, "run the HTTP query service (SQL, catalog)")
    p.add_argument("--port", type=int, default=None, help="override query.port (0: any free)")
    p = command("app", cmd_app, "run one application service ([apps.N]), e.g. CDU's API")
    p.add_argument("--name", required=True, help="app name from the configuration")
    p.add_argument("--port", type=int, default=None, help="override its port (0: any free)")
    p.add_argument("--host", default=None, help="override the address it binds (containers)")
    p = command("cdu", cmd_cdu, "Code Developer University: challenges, simulated students")
    add_cdu_arguments(p)
    p = command("config", cmd_config, "check a configuration file, or describe every field")
    p.add_argument("--describe", action="store_true", help="print every field with its default")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``firelake`` command; errors print one clear line, exit 2."""
    args = build_parser().parse_args(argv)
    setup_logging(args.log_level)
    try:
        if getattr(args, "example", None):
            args.config = str(example_config_path(args.example))
        return int(args.handler(args) or 0)
    except ConfigError as exc:
        print(f"firelake: configuration error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except _expected_errors() as exc:
        # What a user can fix (a busy port, a bad SQL, a topic mismatch): one clear line.
        print(f"firelake: {exc}", file=sys.stderr)
        return 1


def _expected_errors() -> tuple[type[BaseException], ...]:
    """Errors that describe the user's situation rather than a bug in Firelake."""
    from agents.cdu.challenges import ChallengeError
    from cases.case import CaseError
    from cases.records import InputError
    from firelake.broker import BrokerError
    from queries.engine import QueryError
    from queries.export import ExportError
    from queries.saved import SavedQueryError
    from streams.replay import ReplayError
    from streams.topics import TopicError

    return (
        BrokerError,
        CaseError,
        ChallengeError,
        InputError,
        ExportError,
        QueryError,
        ReplayError,
        SavedQueryError,
        TopicError,
        UsageError,
    )


if __name__ == "__main__":
    sys.exit(main())
