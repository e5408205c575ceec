"""Latency of one POST /image/create with local/procedural, against a real server.

Starts `imagegate serve` on a temporary data dir, warms up, then sends sequential
requests and prints the distribution. Usage:

    python bench/create_latency.py [--runs 200] [--size 1024x1024] [-n 1]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run as a script

from bench._harness import admin_key, percentile, start_imagegate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--size", default="1024x1024")
    parser.add_argument("-n", type=int, default=1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        server = start_imagegate(Path(tmp) / "data", env={}, models=None)
        url, key = server.url, admin_key(server)
        try:
            body = {
                "project_id": "admin/bench",
                "inputs": {
                    "model": "local/procedural",
                    "prompt": "a red fox in a blue forest",
                    "n": args.n,
                    "size": args.size,
                },
            }
            with httpx.Client(base_url=url, auth=("api", key), timeout=60) as client:
                for _ in range(10):  # warm up: imports, caches, SQLite pages
                    client.post("/image/create", json=body).raise_for_status()
                times = []
                for _ in range(args.runs):
                    started = time.perf_counter()
                    res = client.post("/image/create", json=body)
                    times.append((time.perf_counter() - started) * 1000)
                    assert res.status_code == 200 and "data" in res.json()["response"]
        finally:
            server.stop()
    print(
        f"POST /image/create  local/procedural  {args.size}  n={args.n}  "
        f"runs={args.runs}  cpus={os.cpu_count()}"
    )
    print(f"  median {statistics.median(times):7.1f} ms")
    print(f"  p90    {percentile(times, 0.90):7.1f} ms")
    print(f"  p99    {percentile(times, 0.99):7.1f} ms")
    print(f"  min    {min(times):7.1f} ms")


if __name__ == "__main__":
    main()
