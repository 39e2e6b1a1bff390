"""Test helpers shipped with Firelake (like Bytewax's ``testing`` module).

``example_config`` gives the shipped Yle configuration with every stream, router and sink
renamed by a unique suffix, so tests share one real broker without sharing topics or
consumer groups. ``sample_event`` builds valid Yle events deterministically.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import signal
import subprocess
import sys
import time
import tomllib
import urllib.request
import uuid
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any

from firelake.broker import free_port
from firelake.config import EXAMPLE_CONFIG, FirelakeConfig, parse_config

__all__ = [
    "example_config",
    "example_data",
    "example_dict",
    "free_port",
    "query_rows",
    "run_cli",
    "running_pipeline",
    "sample_event",
    "start_up",
    "to_toml",
    "unique_suffix",
    "wait_healthy",
    "write_config",
]


def unique_suffix() -> str:
    """A short random suffix for topic and group names."""
    return uuid.uuid4().hex[:10]


def example_data() -> dict[str, Any]:
    """The shipped example configuration as parsed TOML, to be edited by tests."""
    return tomllib.loads(EXAMPLE_CONFIG.read_text(encoding="utf-8"))


def _rename(data: dict[str, Any], suffix: str) -> dict[str, Any]:
    data = copy.deepcopy(data)

    def named(name: str) -> str:
        return f"{name}-{suffix}"

    data["streams"] = {named(k): v for k, v in data.get("streams", {}).items()}
    routers = {}
    for name, router in data.get("routers", {}).items():
        source = router["source"]
        router["source"] = named(source) if isinstance(source, str) else [named(s) for s in source]
        router["dlq"] = named(router.get("dlq", "dlq"))
        router["routes"] = {
            value: [named(t) for t in ([target] if isinstance(target, str) else target)]
            for value, target in router.get("routes", {}).items()
        }
        for rule in router.get("rules", []):
            targets = rule["streams"]
            rule["streams"] = [
                named(t) for t in ([targets] if isinstance(targets, str) else targets)
            ]
        routers[named(name)] = router
    data["routers"] = routers
    sinks = {}
    for name, sink in data.get("sinks", {}).items():
        sink["stream"] = named(sink["stream"])
        sinks[named(name)] = sink
    data["sinks"] = sinks
    windows = {}
    for name, window in data.get("windows", {}).items():
        for key in ("source", "output", "late"):
            if window.get(key):
                window[key] = named(window[key])
        windows[named(name)] = window
    if windows:
        data["windows"] = windows
    for app in data.get("apps", {}).values():
        settings = app.get("settings", {})
        for key in [k for k in settings if k.endswith("_stream")]:
            settings[key] = named(settings[key])
    return data


def example_dict(
    bootstrap: str,
    lake_root: str | Path,
    suffix: str | None = None,
    data: Mapping[str, Any] | None = None,
    **sections: Mapping[str, Any],
) -> dict[str, Any]:
    """The example (or given) configuration as a dict, with unique names, broker and lake.

    Keyword arguments replace or extend top-level sections, e.g.
    ``ingest={"port": 0}`` or ``sinks={...}`` (applied before renaming).
    """
    raw = copy.deepcopy(dict(data) if data is not None else example_data())
    for section, values in sections.items():
        merged = dict(raw.get(section, {}))
        merged.update(values)
        raw[section] = merged
    raw = _rename(raw, suffix or unique_suffix())
    raw.setdefault("kafka", {})["bootstrap"] = bootstrap
    raw.setdefault("lake", {})["root"] = str(lake_root)
    # Pipelines run side by side in tests: the query service takes any free port.
    raw.setdefault("query", {}).setdefault("port", 0)
    # ... and no fixed Prometheus ports are handed out (a test that wants them passes
    # ``metrics={"base_port": ...}``).
    if "metrics" not in sections:
        raw["metrics"] = {"base_port": 0}
    return raw


def example_config(
    bootstrap: str,
    lake_root: str | Path,
    suffix: str | None = None,
    data: Mapping[str, Any] | None = None,
    **sections: Mapping[str, Any],
) -> FirelakeConfig:
    """:func:`example_dict`, parsed into a configuration."""
    raw = example_dict(bootstrap, lake_root, suffix, data, **sections)
    return parse_config(raw, source="<test>", base_dir=str(lake_root), environ={})


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a valid TOML basic string
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        # Inside arrays only (tables elsewhere): EventBridge matchers like {numeric = [...]}.
        items = ", ".join(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items())
        return "{" + items + "}"
    raise TypeError(f"cannot write {type(value).__name__} to TOML")


def _toml_key(key: str) -> str:
    return key if key.replace("-", "").replace("_", "").isalnum() else json.dumps(key)


def to_toml(data: Mapping[str, Any], _prefix: str = "") -> str:
    """Serialize a configuration dict (tables, strings, numbers, bools, lists) as TOML."""
    lines = [
        f"{_toml_key(k)} = {_toml_value(v)}" for k, v in data.items() if not isinstance(v, Mapping)
    ]
    out = "\n".join(lines) + ("\n" if lines else "")
    for key, value in data.items():
        if isinstance(value, Mapping):
            name = f"{_prefix}.{_toml_key(key)}" if _prefix else _toml_key(key)
            out += f"\n[{name}]\n" + to_toml(value, name)
    return out


def write_config(path: str | Path, data: Mapping[str, Any]) -> Path:
    """Write a configuration dict as a TOML file that ``load_config`` reads back equal."""
    path = Path(path)
    path.write_text(to_toml(data), encoding="utf-8")
    return path


_EVENT_TYPES = ("start", "pause", "stop", "heartbeat", "page_view", "click")


def sample_event(
    n: int, event_type: str | None = None, base: datetime | None = None
) -> dict[str, Any]:
    """The n-th deterministic valid Yle event (playback or page, by ``event_type``)."""
    event_type = event_type or _EVENT_TYPES[n % len(_EVENT_TYPES)]
    base = base or datetime(2026, 11, 29, 8, 0, tzinfo=UTC)
    event_time = base + timedelta(seconds=n)
    event: dict[str, Any] = {
        "event_id": f"evt-{n:08d}",
        "event_type": event_type,
        "event_time": event_time.isoformat().replace("+00:00", "Z"),
        "user_id": f"user-{n % 997}",
        "device": ("mobile", "desktop", "tv", "tablet")[n % 4],
        "platform": ("ios", "android", "web", "smarttv")[n % 4],
        "product": ("areena", "uutiset", "urheilu")[n % 3],
        "language": ("fi", "sv", "en")[n % 3],
    }
    if event_type in ("page_view", "click"):
        event["page"] = f"/ohjelmat/{n % 50}"
        event["referrer"] = "https://yle.fi/"
    else:
        event["content_id"] = f"1-{n % 5000}"
        event["content_type"] = ("episode", "clip", "live")[n % 3]
        event["position_seconds"] = n % 3600
        event["bitrate_kbps"] = (800, 1600, 3200)[n % 3]
    return event


def run_cli(config: str | Path, *args: str, timeout: float = 60) -> str:
    """Run a ``firelake`` command on a configuration file; its stdout (AssertionError if
    it fails, with its stderr)."""
    done = subprocess.run(
        [sys.executable, "-m", "firelake.cli", *args, "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if done.returncode != 0:
        raise AssertionError(f"firelake {' '.join(args)} failed:\n{done.stderr}")
    return done.stdout


def query_rows(config: str | Path, sql: str) -> list[dict[str, Any]]:
    """Rows of ``firelake query --format json`` (a JSON array or JSON lines)."""
    out = run_cli(config, "query", sql, "--format", "json").strip()
    if not out:
        return []
    try:
        parsed = json.loads(out)
    except json.JSONDecodeError:
        return [json.loads(line) for line in out.splitlines() if line.strip()]
    return parsed if isinstance(parsed, list) else [parsed]


def wait_healthy(
    base_url: str, process: subprocess.Popen[bytes] | None = None, timeout: float = 60
) -> bool:
    """Wait (bounded) until ``base_url/health`` answers 200; False if ``process`` exits or
    the time runs out first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            return False
        try:
            with urllib.request.urlopen(f"{base_url}/health", timeout=2) as response:
                if response.status == 200:
                    return True
        except OSError:
            pass
        time.sleep(0.3)
    return False


def start_up(
    config: str | Path, log: IO[str], *options: str, env: Mapping[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """``firelake up --config config *options`` in a child process, its output into ``log``
    at INFO; ``env`` (default: this process's) is its environment."""
    return subprocess.Popen(
        [sys.executable, "-m", "firelake.cli", "up", "--config", str(config), *options],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**(os.environ if env is None else env), "FIRELAKE_LOG_LEVEL": "INFO"},
    )


@contextlib.contextmanager
def running_pipeline(
    config: str | Path, ingest_port: int, log_file: str | Path, start_timeout: float = 60
) -> Iterator[str]:
    """``firelake up`` on a configuration, as a user runs it; yields the ingest's base URL.

    Waits (bounded) until the ingest answers ``/health``; on exit sends SIGTERM and checks
    that everything stopped cleanly (exit code 0) within a minute. Failures carry the log.
    """
    log_path = Path(log_file)
    with log_path.open("w") as log:
        process = start_up(config, log)
        base = f"http://127.0.0.1:{ingest_port}"
        try:
            if not wait_healthy(base, process, start_timeout):
                raise AssertionError("firelake up did not serve /health:\n" + log_path.read_text())
            yield base
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                code = process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                raise AssertionError("firelake up did not stop within 60 s of SIGTERM") from None
    if code != 0:
        raise AssertionError(f"firelake up exited with {code}:\n" + log_path.read_text()[-4000:])
