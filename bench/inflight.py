"""Many generations in flight at once, against a provider that answers after a delay:
how many requests fail, and with what (issue 11: "1,000 generations in flight, provider
answering after 5 s, must give zero `503 database unavailable`").

    .venv/bin/python bench/inflight.py                       # 1,000 at once, 5 s, 1.9 MB
    .venv/bin/python bench/inflight.py --requests 200 --delay-ms 2000
    .venv/bin/python bench/inflight.py --workers 1           # one worker, no supervisor

Memory is the peak PSS summed over imagegate's processes (forked workers share pages;
PSS counts each once in all), with the summed peak RSS (VmHWM, an upper bound) beside it.

The server is a real `imagegate serve` process (SQLite + files, the defaults) and the
provider bench/fake_provider.py, both on loopback. Every request is sent at once.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import collections
import shutil
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._harness import admin_key, machine, start_imagegate, start_script
from bench.fake_provider import PAYLOADS
from bench.run import load_average

KEY = "sk-bench-0123456789abcdef"


async def fire(url: str, auth: tuple[str, str], total: int, body: dict) -> collections.Counter:
    statuses: collections.Counter[str] = collections.Counter()
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=600)
    token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
    headers = {"Authorization": f"Basic {token}"}
    async with aiohttp.ClientSession(
        connector=connector, timeout=timeout, headers=headers
    ) as session:

        async def one() -> None:
            try:
                async with session.post(f"{url}/image/create", json=body) as res:
                    data = await res.read()
                    ok = res.status == 200 and b"b64_json" in data[:300]
                    statuses["200 ok" if ok else f"{res.status} {data[:240]!r}"] += 1
            except (aiohttp.ClientError, TimeoutError) as exc:
                statuses[type(exc).__name__] += 1

        await asyncio.gather(*(one() for _ in range(total)))
    return statuses


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--delay-ms", type=int, default=5000)
    parser.add_argument("--payload", choices=PAYLOADS, default="1.5m")
    parser.add_argument(
        "--workers", type=int, default=0, help="imagegate's --workers (default: its own)"
    )
    parser.add_argument("--log", type=Path, help="keep imagegate's output in this file")
    args = parser.parse_args()
    load = load_average()
    with tempfile.TemporaryDirectory(prefix="imagegate-inflight-") as tmp:
        work = Path(tmp)
        fake = start_script(
            "fake_provider.py",
            ["--delay-ms", str(args.delay_ms), "--payload", args.payload],
            work / "fake.log",
        )
        models = work / "models.toml"
        models.write_text(
            f"""
[models."bench/slow"]
provider = "openai"
upstream_model = "bench"
base_url = "{fake.url}/v1"
params = ["size"]
size_range = [256, 2048]
max_attempts = 1
timeout_s = 600
"""
        )
        (work / "data").mkdir()
        workers = ["--workers", str(args.workers)] if args.workers else []
        server = start_imagegate(
            work / "data", env={"OPENAI_API_KEY": KEY}, models=models, extra=workers
        )
        try:
            body = {
                "project_id": "admin/inflight",
                "inputs": {"model": "bench/slow", "prompt": "x"},
            }
            server.reset_peak(pss=True)
            started = time.monotonic()
            statuses = asyncio.run(
                fire(server.url, ("api", admin_key(server)), args.requests, body)
            )
            elapsed = time.monotonic() - started
            memory = server.memory()
            processes = len(server.pids())
        finally:
            server.stop()
            fake.stop()
            if args.log is not None:
                shutil.copyfile(server.log, args.log)
        print(f"machine: {machine()}; load before {load}, after {load_average()}")
        print(
            f"{args.requests} at once, provider delay {args.delay_ms} ms, payload {args.payload}:"
            f" {elapsed:.1f} s; imagegate ({processes} processes): {memory}"
        )
        for status, count in statuses.most_common():
            print(f"  {count:5d}  {status}")
        unavailable = sum(n for s, n in statuses.items() if s.startswith("503"))
        errors = sum(n for s, n in statuses.items() if s != "200 ok")
        print(f"503 answers: {unavailable}; errors of any kind: {errors}")


if __name__ == "__main__":
    main()
