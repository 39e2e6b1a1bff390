"""Run the benchmarks and print Markdown for BENCHMARKS.md: ``python -m bench [--events N]``."""

from __future__ import annotations

import argparse

from bench.harness import broker, render_markdown
from bench.pipeline import run_pipeline_bench


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--events", type=int, default=200_000, help="events per path")
    parser.add_argument("--concurrency", type=int, default=4, help="concurrent HTTP clients")
    args = parser.parse_args()
    with broker() as bootstrap:
        results = run_pipeline_bench(bootstrap, args.events, args.concurrency)
        print(
            render_markdown(
                "Full path vs minimal loop (issue 2)", results, baseline=results[1].name
            )
        )


if __name__ == "__main__":
    main()
