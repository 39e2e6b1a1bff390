"""Code Developer University: submissions scored per second, POST → profile latency (issue 14).

``python -m bench.cdu [--submissions N] [--probes M]``, three measurements on one broker
(``FIRELAKE_KAFKA_BOOTSTRAP`` or one started for the run), default sandbox limits:

1. **Sandbox alone**: the scoring transform (``agents.cdu.scoring.score``) in-process, on
   batches of 8 correct submissions, then of the simulated students' mix without the
   hostile share (good, buggy — including too-slow algorithms that run into the time
   limits — and slow): one scorer process.
2. **Pipeline**: ``firelake up`` on the example; N submissions of the full mix (hostile
   ones included, each costing up to its limit) posted through the API; timed from the
   first POST until the profile agent has folded every result.
3. **Latency**: with the pipeline idle, probes post a passing submission one at a time
   and poll ``GET /v1/cdu/students/{id}`` every 10 ms until the XP shows: POST → profile
   update, p50 and p99 (includes two router hops, the sandbox run and the fold).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
import urllib.request
from pathlib import Path
from typing import Any

from agents.cdu.challenges import load_challenges
from agents.cdu.loadgen import plan_submissions, run_load
from agents.cdu.scoring import DEFAULT_CONCURRENCY, score
from agents.cdu.submissions import build_command
from agents.cdu.testing import CHALLENGES_DIR, cdu_config_dict, get_json, wait_scored
from bench.harness import broker, scratch_dir
from firelake.testing import running_pipeline, unique_suffix, write_config

__all__ = ["main", "run_cdu_bench"]


def _sandbox_rate(count: int, mix: dict[str, float]) -> float:
    challenges = load_challenges(CHALLENGES_DIR)
    planned = plan_submissions(list(challenges.values()), 50, count, seed=3, mix=mix)
    commands = [
        build_command(
            {
                "student_id": p.student_id,
                "challenge_id": p.challenge_id,
                "language": p.language,
                "source": p.source,
            },
            challenges,
        )
        for p in planned
    ]
    started = time.monotonic()
    for start in range(0, len(commands), 8):
        score(commands[start : start + 8])
    return len(commands) / (time.monotonic() - started)


def _post(base: str, body: dict[str, Any]) -> dict[str, Any]:
    request = urllib.request.Request(
        f"{base}/v1/cdu/submissions",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def _latencies(base: str, probes: int) -> list[float]:
    challenges = list(load_challenges(CHALLENGES_DIR).values())
    out = []
    for n in range(probes):
        challenge = challenges[n % len(challenges)]
        student = f"probe-{n:04d}"
        started = time.monotonic()
        _post(
            base,
            {
                "student_id": student,
                "challenge_id": challenge.id,
                "language": "python",
                "source": challenge.reference,
            },
        )
        deadline = started + 60
        while time.monotonic() < deadline:
            status, profile = get_json(f"{base}/v1/cdu/students/{student}")
            if status == 200 and profile["xp"] > 0:
                out.append(time.monotonic() - started)
                break
            time.sleep(0.01)
    return out


def run_cdu_bench(bootstrap: str, submissions: int, probes: int) -> dict[str, Any]:
    good = _sandbox_rate(min(submissions, 200), {"good": 1.0})
    sandbox = _sandbox_rate(min(submissions, 400), {"good": 0.55, "buggy": 0.35, "slow": 0.10})
    with scratch_dir("firelake-bench-cdu-") as tmp:
        raw = cdu_config_dict(bootstrap, tmp / "lake", unique_suffix())
        config = write_config(tmp / "firelake.toml", raw)
        base = f"http://127.0.0.1:{raw['apps']['cdu']['port']}"
        challenges = list(load_challenges(CHALLENGES_DIR).values())
        planned = plan_submissions(challenges, max(1, submissions // 10), submissions, seed=9)
        with running_pipeline(config, raw["ingest"]["port"], Path(tmp) / "up.log", 120):
            wait_scored(base, 0, 60)
            latencies = _latencies(base, 5)  # warm-up: groups joined, first batches done
            started = time.monotonic()
            report = asyncio.run(run_load(base, planned, 16, 900, progress=False))
            wait_scored(base, report.sent + 5, 1800)
            pipeline = report.sent / (time.monotonic() - started)
            latencies = _latencies(base, probes)
    latencies.sort()
    return {
        "submissions": report.sent,
        "sandbox_per_s": sandbox,
        "good_per_s": good,
        "pipeline_per_s": pipeline,
        "latency_p50": statistics.median(latencies),
        "latency_p99": latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))],
        "probes": len(latencies),
    }


def render(result: dict[str, Any]) -> str:
    return "\n".join(
        [
            "### Code Developer University: scoring throughput and latency (issue 14)",
            "",
            "| measurement | value |",
            "| --- | --- |",
            f"| sandbox alone, one scorer process ({DEFAULT_CONCURRENCY} runs at once), "
            f"correct submissions | {result['good_per_s']:.1f} submissions/s |",
            f"| sandbox alone, one scorer process, good/buggy/slow mix (batches of 8 wait "
            f"for their slowest) | {result['sandbox_per_s']:.1f} submissions/s |",
            f"| pipeline, {result['submissions']} submissions of the full mix (8 % hostile), "
            f"POST → every result folded | {result['pipeline_per_s']:.1f} submissions/s |",
            f"| POST → profile update, idle pipeline ({result['probes']} probes) | "
            f"p50 {result['latency_p50'] * 1000:.0f} ms, "
            f"p99 {result['latency_p99'] * 1000:.0f} ms |",
            "",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.cdu", description=__doc__)
    parser.add_argument("--submissions", type=int, default=1000)
    parser.add_argument("--probes", type=int, default=50)
    args = parser.parse_args()
    with broker() as bootstrap:
        print(render(run_cdu_bench(bootstrap, args.submissions, args.probes)))


if __name__ == "__main__":
    main()
