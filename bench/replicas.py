"""Throughput and latency of three imagegate replicas sharing PostgreSQL and S3.

Starts a throwaway PostgreSQL 15 cluster and an S3-compatible server (moto) on loopback,
three `imagegate serve` replicas on them, then sends concurrent generations round-robin
and prints generations per second and the latency distribution. Needs the `test` extra
and Debian's postgresql-15 (scripts/deps/postgresql.sh). Usage:

    python bench/replicas.py [--count 300] [--concurrency 48] [--size 256x256]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # for tests.*

from tests.backends import PgCluster, S3Server
from tests.scale import generate_many, percentile, start_replicas


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=48)
    parser.add_argument("--size", default="256x256")
    parser.add_argument("--replicas", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        pg = PgCluster.create()
        s3 = S3Server.start(root / "moto.log")
        try:
            group = start_replicas(pg, s3, root, args.replicas)
            try:
                run = generate_many(
                    group.urls,
                    group.admin_key,
                    count=args.count,
                    concurrency=args.concurrency,
                    project="admin/bench",
                    size=args.size,
                )
                load = asyncio.run(run)
            finally:
                group.stop()
        finally:
            s3.stop()
            pg.destroy()
    failed = [a for a in load.answers if a.status != 200]
    ms = [a.ms for a in load.answers]
    print(
        f"POST /image/create  local/procedural  {args.size}  replicas={args.replicas}  "
        f"count={args.count}  concurrency={args.concurrency}  cpus={os.cpu_count()}"
    )
    print(f"  {load.rate:7.1f} generations/s  ({len(failed)} failed)")
    print(f"  p50    {percentile(ms, 0.50):7.0f} ms")
    print(f"  p90    {percentile(ms, 0.90):7.0f} ms")
    print(f"  p99    {percentile(ms, 0.99):7.0f} ms")


if __name__ == "__main__":
    main()
