"""The dashboard (QuickSight's part of the book): a page served by the query service.

``GET /`` (and ``/dashboard``) is one HTML page with its script and styles, and uPlot —
a small, well-kept MIT charting library, shipped in the package under
``queries/static/vendor/uplot`` (the machines reach no CDN). The page reads the service's
own API and refreshes on its own:

- **Reports**: every saved query whose parameters all have defaults, drawn as its
  ``-- chart:`` header says (bar or line, one line per ``series`` value) above a table of
  its rows, with rows, time, files, bytes scanned and price; every 15 s.
- **Live tables**: each lake table's rows (and rows/s between two looks), files,
  partitions and newest partition, every 5 s — window results written by window agents
  are lake tables too, so they show here as they update.
- **Pipeline health** (``GET /v1/pipeline``): each router's events, dead-lettered events
  and consumer lag from its Prometheus ``/metrics`` page (``metrics_port``; scraped over
  HTTP on 127.0.0.1 — the query layer talks to no Kafka client), each sink's table rows
  and freshness, and the DLQ table's counts by reason as a chart.
"""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from firelake.config import FirelakeConfig
from queries.catalog import TableInfo
from queries.sandbox import identifier
from queries.versions import last_update

__all__ = ["STATIC", "add_dashboard", "pipeline_health", "router_metrics"]

#: The page, its script and styles, and the vendored chart library.
STATIC = Path(__file__).parent / "static"
_TYPES = {".html": "text/html", ".js": "text/javascript", ".css": "text/css"}


def router_metrics(port: int, timeout: float = 1.0) -> dict[str, float] | None:
    """``firelake_router_*`` samples of one ``/metrics`` page summed over labels, or None
    when nothing answers there."""
    url = f"http://127.0.0.1:{port}/metrics"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            text = response.read().decode("utf-8")
    except (urllib.error.URLError, OSError):
        return None
    values: dict[str, float] = {}
    try:
        families = list(text_string_to_metric_families(text))
    except ValueError:
        return None  # not a Prometheus page: something else listens there
    for family in families:
        if not family.name.startswith("firelake_router_"):
            continue
        metric = family.name.removeprefix("firelake_router_")
        for sample in family.samples:
            if sample.name.endswith(("_created", "_bucket", "_count", "_sum")):
                continue
            values[metric] = values.get(metric, 0.0) + float(sample.value)
    return values


def pipeline_health(
    config: FirelakeConfig, tables: dict[str, TableInfo], run: Any
) -> dict[str, Any]:
    """The pipeline's stages as the dashboard shows them (blocking).

    ``run(sql)`` runs SQL on the query service and returns the API's result JSON.
    """
    stages: list[dict[str, Any]] = []
    notes: list[str] = []
    now = time.time()
    for name, router in config.routers.items():
        if not router.metrics_port:
            stages.append(
                {
                    "name": f"router {name}",
                    "state": "no metrics_port",
                    "events": None,
                    "dead_lettered": None,
                    "lag": None,
                }
            )
            continue
        found = [
            sample for port in router.metrics_ports if (sample := router_metrics(port)) is not None
        ]
        total: dict[str, float] = {}
        for sample in found:
            for key, value in sample.items():
                total[key] = total.get(key, 0.0) + value
        stages.append(
            {
                "name": f"router {name}",
                "state": f"{len(found)}/{router.workers} up" if found else "down",
                "events": int(total.get("events_in", 0)) if found else None,
                "dead_lettered": int(total.get("dead_lettered", 0)) if found else None,
                "lag": int(total.get("lag", 0)) if found else None,
            }
        )
    for sink in config.sinks.values():
        info = tables.get(sink.table)
        updated = last_update(info) if info is not None else None
        state = "no files yet" if updated is None else f"newest file {now - updated:.0f} s old"
        stages.append(
            {
                "name": f"sink {sink.name} -> {sink.table}",
                "state": state,
                "events": info.rows if info is not None else 0,
                "dead_lettered": None,
                "lag": None,
            }
        )
    if not config.routers:
        notes.append("no routers configured")
    dlq = None
    for table in config.dlq_tables():
        if table in tables:
            dlq = run(
                f"SELECT error_type, count(*) AS events FROM {identifier(table)} "
                "GROUP BY error_type ORDER BY events DESC, error_type"
            )
            break
    return {"stages": stages, "dlq": dlq, "notes": notes}


async def _page(request: web.Request) -> web.StreamResponse:
    return web.FileResponse(STATIC / "dashboard.html", headers={"Content-Type": "text/html"})


async def _root(request: web.Request) -> web.StreamResponse:
    raise web.HTTPFound("/dashboard")


async def _static(request: web.Request) -> web.StreamResponse:
    relative = Path(request.match_info["path"])
    target = (STATIC / relative).resolve()
    if (
        ".." in relative.parts
        or not target.is_relative_to(STATIC.resolve())
        or not target.is_file()
    ):
        raise web.HTTPNotFound()
    headers = {"Cache-Control": "max-age=300"}
    if target.suffix in _TYPES:
        headers["Content-Type"] = _TYPES[target.suffix]
    return web.FileResponse(target, headers=headers)


def add_dashboard(app: web.Application, health: Any) -> None:
    """Mount the page, its files and ``GET /v1/pipeline`` (``health(request)`` answers it)."""
    app.router.add_get("/", _root)
    app.router.add_get("/dashboard", _page)
    app.router.add_get("/static/{path:.+}", _static)
    app.router.add_get("/v1/pipeline", health)
