"""Pipeline health figures the dashboard shows: routers' /metrics pages read over HTTP."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from firelake.broker import free_port
from queries.dashboard import router_metrics

PAGE = b"""# HELP firelake_router_events_in_total Events read.
# TYPE firelake_router_events_in_total counter
firelake_router_events_in_total{router="clickstream"} 1200.0
firelake_router_events_in_created{router="clickstream"} 1.7e9
# HELP firelake_router_dead_lettered_total DLQ records by error type.
# TYPE firelake_router_dead_lettered_total counter
firelake_router_dead_lettered_total{router="clickstream",error_type="missing_field"} 7.0
firelake_router_dead_lettered_total{router="clickstream",error_type="wrong_type"} 5.0
# HELP firelake_router_lag Records behind.
# TYPE firelake_router_lag gauge
firelake_router_lag{router="clickstream",topic="raw",partition="0"} 3.0
firelake_router_lag{router="clickstream",topic="raw",partition="1"} 4.0
# HELP other_metric Not ours.
# TYPE other_metric gauge
other_metric 9.0
"""


class _Metrics(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.end_headers()
        self.wfile.write(PAGE)

    def log_message(self, *args: object) -> None:
        pass


def test_router_metrics_sums_samples_by_name() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Metrics)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        values = router_metrics(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()
    assert values == {"events_in": 1200.0, "dead_lettered": 12.0, "lag": 7.0}


def test_nothing_listening_is_none() -> None:
    assert router_metrics(free_port(), timeout=0.5) is None
