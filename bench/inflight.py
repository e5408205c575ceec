"""Many generations in flight at once, against a provider that answers after a delay:
how many requests fail, and with what (issue 11: "1,000 generations in flight, provider
answering after 5 s, must give zero `503 database unavailable`").

    .venv/bin/python bench/inflight.py                       # 1,000 at once, 5 s, 1.9 MB
    .venv/bin/python bench/inflight.py --requests 200 --delay-ms 2000
    .venv/bin/python bench/inflight.py --workers 1           # one worker, no supervisor
    .venv/bin/python bench/inflight.py --path untracked --workers 1 --payload 4k

`--path` picks the way the images go: `weave` (/image/create, stored), `untracked`
(/image/create with track_llm_call false: answered with the base64, stored nowhere),
`stream` (the OpenAI door's server-sent events, two partial images then the final one).

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
PROJECT = "admin/inflight"


PATHS = ("weave", "untracked", "stream")
COMPLETED = b"\nevent: image_generation.completed\n"  # a stream's final image


def request_for(path: str) -> tuple[str, dict, dict[str, str], bytes]:
    """(URL path, JSON body, extra headers, what a good answer starts with) for `path`."""
    inputs = {"model": "bench/slow", "prompt": "x"}
    if path == "stream":
        body = {**inputs, "stream": True, "partial_images": 2}
        # (after any `: keep-alive` comments the door sends while the first partial comes)
        return "/v1/images/generations", body, {"OpenAI-Project": PROJECT}, b""
    body = {"project_id": PROJECT, "inputs": inputs}
    if path == "untracked":
        body["track_llm_call"] = False
    return "/image/create", body, {}, b'{"response":{"created"'


async def fire(url: str, auth: tuple[str, str], total: int, path: str) -> collections.Counter:
    statuses: collections.Counter[str] = collections.Counter()
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=600)
    token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
    route, body, extra, good = request_for(path)
    headers = {"Authorization": f"Basic {token}", **extra}
    async with aiohttp.ClientSession(
        connector=connector, timeout=timeout, headers=headers
    ) as session:

        async def one() -> None:
            try:
                async with session.post(f"{url}{route}", json=body) as res:
                    data = await res.read()
                    ok = res.status == 200 and data.startswith(good) and b"b64_json" in data
                    ok = ok and (path != "stream" or COMPLETED in data)
                    shown = data if len(data) < 400 else data[:120] + b" ... " + data[-280:]
                    statuses["200 ok" if ok else f"{res.status} {shown!r}"] += 1
            except (aiohttp.ClientError, TimeoutError) as exc:
                statuses[type(exc).__name__] += 1

        await asyncio.gather(*(one() for _ in range(total)))
    return statuses


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--delay-ms", type=int, default=5000)
    parser.add_argument("--payload", choices=PAYLOADS, default="1.5m")
    parser.add_argument("--path", choices=PATHS, default="weave")
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
params = ["size", "stream"]
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
            server.reset_peak(pss=True)
            started = time.monotonic()
            statuses = asyncio.run(
                fire(server.url, ("api", admin_key(server)), args.requests, args.path)
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
            f"{args.requests} at once ({args.path}, workers {args.workers or 'default'}), provider"
            f" delay {args.delay_ms} ms, payload {args.payload}:"
            f" {elapsed:.1f} s; imagegate ({processes} processes): {memory}"
        )
        for status, count in statuses.most_common():
            print(f"  {count:5d}  {status}")
        unavailable = sum(n for s, n in statuses.items() if s.startswith("503"))
        errors = sum(n for s, n in statuses.items() if s != "200 ok")
        print(f"503 answers: {unavailable}; errors of any kind: {errors}")


if __name__ == "__main__":
    main()
