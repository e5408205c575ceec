"""imagegate's benchmarks, one command, one table.

    .venv/bin/python bench/run.py            # the full run (a few minutes on 2 cores)
    .venv/bin/python bench/run.py --quick    # fewer requests, same table
    .venv/bin/python bench/run.py --profile  # also profile imagegate at c=64 (py-spy)

- gateway: POST /image/create against a local fake OpenAI-protocol provider answering
  after 0 and 500 ms with a 1024x1024 PNG as base64; latency minus that delay (p50,
  p99) at concurrency 1, 64 and 256, requests/s and the server's peak RSS. Beside it,
  the floor (bench/floor.py): the same payload from the same provider, decoded, hashed,
  written and answered by a bare ASGI handler. "x floor" is imagegate's p50 overhead
  over the floor's.
- local: images/s of `local/procedural` through /image/create at 512 and 1024.
- reads: /calls/stream_query, limit=100 and a full stream, on 100,000 calls.
- litellm: the gateway rows through LiteLLM's proxy, when `litellm[proxy]` is there.

Every server is a real process on loopback; the load comes from this process (aiohttp,
the cheapest client at hand), so on a small machine it shares the CPU with them.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import profile, proxy, reads
from bench._harness import (
    LoadResult,
    Server,
    admin_key,
    machine,
    percentile,
    print_table,
    run_load,
    start_imagegate,
    start_script,
)

KEY = "sk-bench-0123456789abcdef"
DELAYS_MS = (0, 500)
CONCURRENCY = (1, 64, 256)
HEADERS = [
    "section", "case", "requests", "p50 ms", "p99 ms", "throughput", "CPU ms/req", "peak RSS MiB",
    "note",
]  # fmt: skip


def requests_for(delay_ms: int, concurrency: int, quick: bool) -> int:
    """Enough requests for a stable p99 without making the 500 ms rows take minutes."""
    per_client = 6 if delay_ms else 12
    count = (30 if delay_ms else 300) if concurrency == 1 else concurrency * per_client
    return max(10, count // 3) if quick else count


def catalog(fakes: dict[int, Server]) -> str:
    return "".join(
        f"""
[models."bench/delay-{delay}"]
provider = "openai"
upstream_model = "bench"
base_url = "{server.url}/v1"
params = ["size"]
size_range = [256, 2048]
max_attempts = 1
timeout_s = 600
"""
        for delay, server in fakes.items()
    )


@dataclass
class Measured:
    result: LoadResult
    rss_mib: float  # the server's peak resident memory during the timed requests
    cpu_ms: float  # the server's CPU time per timed request


def gateway_row(name: str, delay: int, concurrency: int, m: Measured, note: str = "") -> list[str]:
    result = m.result
    overhead = [ms - delay for ms in result.latencies_ms]
    errors = f"{result.errors} errors" if result.errors else ""
    return [
        "gateway",
        f"{name:<9} delay {delay:>3} ms  c={concurrency}",
        str(len(overhead)),
        f"{percentile(overhead, 0.5):.1f}",
        f"{percentile(overhead, 0.99):.1f}",
        f"{result.rate:.0f} req/s",
        f"{m.cpu_ms:.1f}",
        f"{m.rss_mib:.0f}",
        " ".join(filter(None, [note, errors])),
    ]


def measure(
    server: Server, path: str, body: dict, concurrency: int, total: int, auth: tuple | None
) -> Measured:
    cpu_at_start = 0.0

    def started() -> None:  # after the untimed first wave
        nonlocal cpu_at_start
        server.reset_peak()
        cpu_at_start = server.cpu_seconds()

    result = asyncio.run(
        run_load(
            server.url,
            path,
            body,
            concurrency=concurrency,
            total=total,
            auth=auth,
            ok=lambda status, data: status == 200 and b"b64_json" in data[:200],
            on_started=started,
        )
    )
    cpu_ms = (server.cpu_seconds() - cpu_at_start) * 1000 / max(1, len(result.latencies_ms))
    return Measured(result, server.peak_rss_mib(), cpu_ms)


def gateway(work: Path, args: argparse.Namespace, rows: list[list[str]]) -> list[tuple[str, float]]:
    """The gateway and local rows; the profile's shares, when asked for one."""
    shares: list[tuple[str, float]] = []
    fakes = {
        d: start_script("fake_provider.py", ["--delay-ms", str(d)], work / f"fake-{d}.log")
        for d in DELAYS_MS
    }
    servers = list(fakes.values())
    try:
        models = work / "models.toml"
        models.write_text(catalog(fakes))
        data_dir = work / "gateway" / "data"
        data_dir.mkdir(parents=True)
        imagegate = start_imagegate(data_dir, env={"OPENAI_API_KEY": KEY}, models=models)
        servers.append(imagegate)
        key = ("api", admin_key(imagegate))
        floors = {
            d: start_script(
                "floor.py",
                ["--upstream", fakes[d].url, "--dir", str(work / f"floor-{d}")],
                work / f"floor-{d}.log",
            )
            for d in DELAYS_MS
        }
        servers += floors.values()
        litellm = proxy.start(work, fakes) if args.litellm else None
        if litellm is not None:
            servers.append(litellm.server)
        for delay in DELAYS_MS:
            body = {
                "project_id": "admin/bench",
                "inputs": {"model": f"bench/delay-{delay}", "prompt": "a red fox in a blue forest"},
            }
            for c in CONCURRENCY:
                total = requests_for(delay, c, args.quick)
                floor = measure(floors[delay], "/", {}, c, total, None)
                sampler = (
                    profile.start(imagegate, work / "profile.txt")
                    if args.profile and delay == 0 and c == 64
                    else None
                )
                ours = measure(imagegate, "/image/create", body, c, total, key)
                if sampler is not None:
                    shares = profile.finish(sampler)
                ratio = percentile(ours.result.latencies_ms, 0.5) - delay
                ratio /= max(percentile(floor.result.latencies_ms, 0.5) - delay, 1e-9)
                rows.append(gateway_row("imagegate", delay, c, ours, f"{ratio:.1f}x floor"))
                rows.append(gateway_row("floor", delay, c, floor))
                if litellm is not None:
                    theirs = measure(
                        litellm.server, "/v1/images/generations", litellm.body(delay), c, total,
                        None,
                    )  # fmt: skip
                    rows.append(gateway_row("litellm", delay, c, theirs))
        local(imagegate, key, args, rows)
    finally:
        for server in servers:
            server.stop()
    return shares


def local(imagegate: Server, key: tuple, args: argparse.Namespace, rows: list[list[str]]) -> None:
    for side in (512, 1024):
        body = {
            "project_id": "admin/local",
            "inputs": {
                "model": "local/procedural",
                "prompt": "red and blue",
                "size": f"{side}x{side}",
            },
        }
        total = 30 if args.quick else 100
        m = measure(imagegate, "/image/create", body, 4, total, key)
        result = m.result
        rows.append(
            [
                "local",
                f"local/procedural {side}x{side}  c=4, n=1",
                str(total),
                f"{percentile(result.latencies_ms, 0.5):.1f}",
                f"{percentile(result.latencies_ms, 0.99):.1f}",
                f"{result.rate:.1f} img/s",
                f"{m.cpu_ms:.1f}",
                f"{m.rss_mib:.0f}",
                f"{result.errors} errors" if result.errors else "",
            ]
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer requests, same table")
    parser.add_argument("--profile", action="store_true", help="py-spy imagegate at c=64")
    parser.add_argument(
        "--only", choices=["gateway", "reads"], help="run one section (gateway includes local)"
    )
    parser.add_argument("--calls", type=int, default=100_000, help="calls in the reads project")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    parser.add_argument("--no-litellm", dest="litellm", action="store_false")
    args = parser.parse_args()
    gateway_too = args.only in (None, "gateway")
    args.litellm = args.litellm and gateway_too and proxy.available()
    work = Path(tempfile.mkdtemp(prefix="imagegate-bench-"))
    started = time.monotonic()
    rows: list[list[str]] = []
    shares: list[tuple[str, float]] = []
    try:
        if args.only in (None, "gateway"):
            shares = gateway(work, args, rows)
        if args.only in (None, "reads"):
            figures = reads.run(
                work,
                count=args.calls,
                pages=30 if args.quick else 100,
                fulls=1 if args.quick else 3,
            )
            rows += reads.rows(figures)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print(
        f"imagegate bench, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC{', quick' if args.quick else ''}"
    )
    print(f"machine: {machine()}")
    print("gateway p50/p99: latency minus the provider's delay; PNG 1024x1024 as base64")
    if gateway_too and not args.litellm:
        print("litellm: not measured (no `litellm` with its proxy extras: see bench/proxy.py)")
    print()
    print_table(HEADERS, rows)
    if shares:
        print("\nimagegate at c=64, delay 0: where the serial Python work goes")
        print("(py-spy samples of the thread holding the GIL, by innermost library)")
        for name, share in shares[:12]:
            print(f"  {share:6.1%}  {name}")
    print(
        f"\n{time.monotonic() - started:.0f} s; work dir {work}{'' if args.keep else ' (removed)'}"
    )


if __name__ == "__main__":
    main()
