"""Run the benchmarks and print Markdown for BENCHMARKS.md.

``python -m bench [NAME ...] [--events N]`` runs the named benchmarks (default: all), each
measuring Firelake's path and its baseline side by side in one run on the same events, on
one broker (``FIRELAKE_KAFKA_BOOTSTRAP`` or one started for the run).
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable

from bench.harness import BenchResult, broker, render_markdown

#: name -> (module, function, title, index of the baseline result)
BENCHES: dict[str, tuple[str, str, str, int]] = {
    "pipeline": ("bench.pipeline", "run_pipeline_bench", "Full path vs minimal loop (issue 2)", 1),
    "kinesis": (
        "bench.kinesis",
        "run_kinesis_bench",
        "Kinesis PutRecords through the ingest vs direct to Kafka (issue 3)",
        0,
    ),
    "router": ("bench.router", "run_router_bench", "Router vs plain aiokafka loop (issue 4)", 1),
    "sink": ("bench.sink", "run_sink_bench", "Sink vs minimal loop (issue 5)", 1),
    "windows": (
        "bench.windows",
        "run_windows_bench",
        "Tumbling 60 s count per key, 10 000 keys: Firelake vs Quix Streams vs Faust (issue 10)",
        1,
    ),
    "queries": (
        "bench.queries",
        "run_queries_bench",
        "Queries: HTTP and Athena APIs vs bare DuckDB, 10 M events (issue 11)",
        0,
    ),
}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument(
        "names",
        nargs="*",
        choices=[[], *BENCHES],
        default=[],
        help=f"benchmarks to run (default: all of {', '.join(BENCHES)})",
    )
    parser.add_argument("--events", type=int, default=200_000, help="events per path")
    args = parser.parse_args()
    names = args.names or list(BENCHES)
    unknown = set(names) - set(BENCHES)
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(sorted(unknown))}")
    with broker() as bootstrap:
        for name in names:
            module, function, title, baseline = BENCHES[name]
            try:
                run: Callable[..., list[BenchResult]] = getattr(
                    importlib.import_module(module), function
                )
            except (ImportError, AttributeError) as exc:
                print(f"### {title}\n\nnot run: {exc}\n")
                continue
            results = run(bootstrap, args.events)
            # A benchmark of latencies (not rates) renders its own section.
            render_section = getattr(importlib.import_module(module), "render_section", None)
            if render_section is not None:
                print(render_section(title, results), flush=True)
                continue
            print(render_markdown(title, results, baseline=results[baseline].name), flush=True)


if __name__ == "__main__":
    main()
