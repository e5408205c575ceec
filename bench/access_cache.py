"""What the access cache saves: a cheap authenticated request (`/calls/query_stats` on an
empty project) against a real `imagegate serve`, with the cache off
(IMAGEGATE_ACCESS_CACHE_TTL=0) and on (the default), alternating rounds.

    .venv/bin/python bench/access_cache.py [--rounds 3] [--requests 2000] [--workers 1]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._harness import admin_key, percentile, run_load, start_imagegate


def measure(ttl: str, workers: int, requests: int) -> tuple[float, float, float]:
    with tempfile.TemporaryDirectory(prefix="imagegate-cache-") as tmp:
        env = {"IMAGEGATE_ACCESS_CACHE_TTL": ttl, "IMAGEGATE_WORKERS": str(workers)}
        server = start_imagegate(Path(tmp) / "data", env=env, models=None)
        try:
            result = asyncio.run(
                run_load(
                    server.url,
                    "/calls/query_stats",
                    {"project_id": "admin/empty"},
                    concurrency=32,
                    total=requests,
                    auth=("api", admin_key(server)),
                )
            )
        finally:
            server.stop()
    assert result.errors == 0, f"{result.errors} errors"
    lat = result.latencies_ms
    return result.rate, statistics.median(lat), percentile(lat, 99)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    load = os.getloadavg()
    print(f"query_stats, c=32, {args.workers} worker(s), load {load[0]:.2f} {load[1]:.2f}")
    for round_ in range(args.rounds):
        for label, ttl in (("no cache", "0"), ("cache 0.5 s", "0.5")):
            rate, p50, p99 = measure(ttl, args.workers, args.requests)
            print(f"round {round_ + 1} {label:>12}: {rate:6.0f} req/s, p50 {p50:6.1f} ms, "
                  f"p99 {p99:6.1f} ms")  # fmt: skip


if __name__ == "__main__":
    main()
