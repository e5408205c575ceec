"""imagegate's benchmarks, one command, one table.

    .venv/bin/python bench/run.py            # the full run (~15 minutes on 2 cores)
    .venv/bin/python bench/run.py --quick    # fewer requests, same table
    .venv/bin/python bench/run.py --profile  # also profile imagegate at c=64 (py-spy)

- gateway: for each payload (a 1024x1024 PNG of ~130 KB, one of ~1.9 MB, a 3840x2160
  one; bench/fake_provider.py), a local fake OpenAI-protocol provider answering at once,
  measured five ways: directly, through the floor (bench/floor.py: a bare ASGI handler
  that fetches, decodes, hashes, fsync-writes and answers), through the same work on the
  stack imagegate must use (bench/stack_floor.py: FastAPI and the official openai SDK),
  through LiteLLM's proxy and through imagegate's POST /image/create. p50 at c=1;
  throughput and p99 at c=64; the server's CPU per request and peak RSS; ratios to the
  floors and to LiteLLM.
- local: images/s of `local/procedural` through /image/create at 512 and 1024.
- reads: /calls/stream_query, limit=100 and a full stream, on 100,000 calls.
- litellm: LiteLLM's proxy, pinned, in its own venv (`bash bench/litellm_venv.sh`).

Every server is a real process on loopback; the load comes from this process (aiohttp,
the cheapest client at hand), so on a small machine it shares the CPU with them.
"""

from __future__ import annotations

import argparse
import asyncio
import os
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
from bench.fake_provider import PAYLOADS

KEY = "sk-bench-0123456789abcdef"
CONCURRENCY = (1, 64)
HEADERS = [
    "section", "case", "requests", "p50 ms", "p99 ms", "throughput", "CPU ms/req", "peak RSS MiB",
    "note",
]  # fmt: skip
SUMMARY_HEADERS = [
    "payload", "c", "imagegate door", "direct to fake", "floor", "stack floor", "LiteLLM proxy",
    "imagegate", "imagegate / floor", "imagegate / stack floor", "imagegate / LiteLLM",
]  # fmt: skip
# Requests per row (c=1, c=64): enough for a stable p99 without the 4K rows taking minutes.
REQUESTS = {"130k": (200, 768), "1.5m": (60, 384), "4k": (16, 128)}


def requests_for(payload: str, concurrency: int, quick: bool) -> int:
    count = REQUESTS[payload][0 if concurrency == 1 else 1]
    return max(8, count // 3) if quick else count


def catalog(fakes: dict[str, Server]) -> str:
    return "".join(
        f"""
[models."bench/{payload}"]
provider = "openai"
upstream_model = "bench"
base_url = "{server.url}/v1"
params = ["size"]
size_range = [256, 2048]
max_attempts = 1
timeout_s = 600
"""
        for payload, server in fakes.items()
    )


@dataclass
class Measured:
    result: LoadResult
    rss_mib: float  # the server's peak resident memory during the timed requests
    cpu_ms: float  # the server's CPU time per timed request

    @property
    def p50(self) -> float:
        return percentile(self.result.latencies_ms, 0.5)

    @property
    def p99(self) -> float:
        return percentile(self.result.latencies_ms, 0.99)


def gateway_row(name: str, payload: str, c: int, m: Measured, note: str = "") -> list[str]:
    result = m.result
    errors = f"{result.errors} errors" if result.errors else ""
    if result.error_kinds:
        errors += " (" + ", ".join(f"{n} {k}" for k, n in result.error_kinds.most_common(2)) + ")"
    return [
        "gateway",
        f"{name:<13} {payload:>4}  c={c}",
        str(len(result.latencies_ms)),
        f"{m.p50:.1f}",
        f"{m.p99:.1f}",
        f"{result.rate:.1f} req/s",
        f"{m.cpu_ms:.1f}",
        f"{m.rss_mib:.0f}",
        " ".join(filter(None, [note, errors])),
    ]


def measure(
    server: Server,
    path: str,
    body: dict,
    concurrency: int,
    total: int,
    auth: tuple | None,
    headers: dict[str, str] | None = None,
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
            headers=headers,
            ok=lambda status, data: status == 200 and b"b64_json" in data[:200],
            on_started=started,
        )
    )
    cpu_ms = (server.cpu_seconds() - cpu_at_start) * 1000 / max(1, len(result.latencies_ms))
    return Measured(result, server.peak_rss_mib(), cpu_ms)


def start_floor(script: str, fake: Server, directory: Path) -> Server:
    """A floor (bench/floor.py or bench/stack_floor.py) in front of `fake`, writing its
    files under `directory`."""
    return start_script(
        script, ["--upstream", fake.url, "--dir", str(directory)], directory.with_suffix(".log")
    )


def ratio(ours: Measured, base: Measured | None, c: int) -> str:
    """`ours` against `base`: p50 at c=1, throughput and p99 at c=64."""
    if base is None:
        return "-"
    if c == 1:
        return f"p50 {ours.p50 / base.p50:.2f}x"
    return f"{ours.result.rate / base.result.rate:.2f}x rps, p99 {ours.p99 / base.p99:.2f}x"


def summary_rows(payload: str, c: int, by_name: dict[str, Measured]) -> list[list[str]]:
    """The issue's table, one line per imagegate door: p50 at c=1, throughput (and p99)
    at c=64, and imagegate's ratios to the floors and to LiteLLM."""

    def cell(m: Measured | None) -> str:
        if m is None:
            return "-"
        if c == 1:
            return f"{m.p50:.1f} ms"
        return f"{m.result.rate:.1f}/s p99 {m.p99:.0f} ms"

    floor, stack, theirs = by_name.get("floor"), by_name.get("stack floor"), by_name.get("litellm")
    rows = []
    for door in ("imagegate", "imagegate /v1"):
        ours = by_name.get(door)
        if ours is None:
            continue
        vs_litellm = "-"
        if theirs is not None:
            vs_litellm = (
                f"p50 {ours.p50 / theirs.p50:.2f}x"
                if c == 1
                else f"{ours.result.rate / max(theirs.result.rate, 1e-9):.2f}x rps"
            )
        cells = [cell(by_name.get("direct")), cell(floor), cell(stack), cell(theirs), cell(ours)]
        label = "/image/create" if door == "imagegate" else "/v1/images"
        vs_floors = [ratio(ours, floor, c), ratio(ours, stack, c)]
        rows.append([payload, f"c={c}", label, *cells, *vs_floors, vs_litellm])
    return rows


def gateway(
    work: Path, args: argparse.Namespace, rows: list[list[str]], summary: list[list[str]]
) -> list[tuple[str, float]]:
    """The gateway and local rows; the profile's shares, when asked for one."""
    shares: list[tuple[str, float]] = []
    fakes = {
        p: start_script("fake_provider.py", ["--payload", p], work / f"fake-{p}.log")
        for p in args.payloads
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
        floors = {p: start_floor("floor.py", fakes[p], work / f"floor-{p}") for p in args.payloads}
        stack_floors = {
            p: start_floor("stack_floor.py", fakes[p], work / f"stack-floor-{p}")
            for p in args.payloads
        }
        servers += [*floors.values(), *stack_floors.values()]
        litellm = proxy.start(work, fakes) if args.litellm else None
        if litellm is not None:
            servers.append(litellm.server)
        for payload in args.payloads:
            body = {
                "project_id": "admin/bench",
                "inputs": {"model": f"bench/{payload}", "prompt": "a red fox in a blue forest"},
            }
            direct_body = {"model": "bench", "prompt": "a red fox", "n": 1, "size": "1024x1024"}
            for c in CONCURRENCY:
                total = requests_for(payload, c, args.quick)
                by_name: dict[str, Measured] = {}
                by_name["direct"] = measure(
                    fakes[payload], "/v1/images/generations", direct_body, c, total, None
                )
                by_name["floor"] = measure(floors[payload], "/", {}, c, total, None)
                by_name["stack floor"] = measure(stack_floors[payload], "/", {}, c, total, None)
                sampler = (
                    profile.start(imagegate, work / f"profile-{payload}.txt")
                    if args.profile and c == 64
                    else None
                )
                by_name["imagegate"] = measure(imagegate, "/image/create", body, c, total, key)
                if sampler is not None:
                    shares.append((payload, profile.finish(sampler)))  # type: ignore[arg-type]
                if args.openai_door:
                    # The OpenAI door answers with the image as base64, as the floor does.
                    by_name["imagegate /v1"] = measure(
                        imagegate, "/v1/images/generations",
                        {"model": f"bench/{payload}", "prompt": "a red fox in a blue forest"},
                        c, total, None,
                        {"Authorization": f"Bearer {key[1]}", "OpenAI-Project": "bench"},
                    )  # fmt: skip
                if litellm is not None:
                    by_name["litellm"] = measure(
                        litellm.server, "/v1/images/generations", litellm.body(payload), c,
                        total, None, litellm.headers,
                    )  # fmt: skip
                for name, m in by_name.items():
                    rows.append(gateway_row(name, payload, c, m))
                summary += summary_rows(payload, c, by_name)
        if args.local:
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
    parser.add_argument(
        "--payload", dest="payloads", action="append", choices=PAYLOADS,
        help="measure only this payload (repeatable; default: all three)",
    )  # fmt: skip
    parser.add_argument("--no-local", dest="local", action="store_false")
    parser.add_argument(
        "--no-openai-door", dest="openai_door", action="store_false",
        help="skip imagegate's /v1/images/generations rows",
    )  # fmt: skip
    parser.add_argument("--calls", type=int, default=100_000, help="calls in the reads project")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    parser.add_argument("--no-litellm", dest="litellm", action="store_false")
    args = parser.parse_args()
    args.payloads = args.payloads or list(PAYLOADS)
    gateway_too = args.only in (None, "gateway")
    args.litellm = args.litellm and gateway_too and proxy.available()
    work = Path(tempfile.mkdtemp(prefix="imagegate-bench-"))
    started = time.monotonic()
    load_before = load_average()
    rows: list[list[str]] = []
    summary: list[list[str]] = []
    shares: list[tuple[str, list[tuple[str, float]]]] = []
    try:
        if gateway_too:
            shares = gateway(work, args, rows, summary)  # type: ignore[assignment]
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
    print(f"load average (1, 5, 15 min): before {load_before}, after {load_average()}")
    print(
        "gateway: POST to each server, provider answering at once; payloads: 130k = 1024x1024 "
        "PNG ~130 KB, 1.5m = 1024x1024 PNG ~1.9 MB, 4k = 3840x2160 PNG ~15 MB (as base64); "
        "every answer a distinct file"
    )
    if gateway_too and not args.litellm:
        print(
            "litellm: not measured (no `litellm` with its proxy extras: bash bench/litellm_venv.sh)"
        )
    if proxy.available() and args.litellm:
        print(f"litellm: {proxy.version()}")
    print()
    if summary:
        print_table(SUMMARY_HEADERS, summary)
        print()
    print_table(HEADERS, rows)
    for payload, payload_shares in shares:
        print(f"\nimagegate at c=64, {payload}: where the serial Python work goes")
        print("(py-spy samples of the thread holding the GIL, by innermost library)")
        for name, share in payload_shares[:12]:
            print(f"  {share:6.1%}  {name}")
    print(
        f"\n{time.monotonic() - started:.0f} s; work dir {work}{'' if args.keep else ' (removed)'}"
    )


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


if __name__ == "__main__":
    main()
