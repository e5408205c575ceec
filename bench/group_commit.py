"""What recording a generation costs on its own: each generation's start and end written
through the group commit (store/group_commit.py) to a real SQLite file, `c` at a time,
with no HTTP, provider or files around it. Per generation: throughput, CPU of the whole
process (the writer's thread included) and the latency of its two writes.

    .venv/bin/python bench/group_commit.py [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import uvloop

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._harness import percentile
from imagegate.config import Settings
from imagegate.core import Imagegate
from imagegate.ids import uuid7
from imagegate.store.group_commit import GenerationRecorder

PROJECT = "acme/bench"


def start_record() -> dict[str, Any]:
    """A start as the generation service writes one."""
    return {
        "id": uuid7(),
        "project_id": PROJECT,
        "op_name": "imagegate.image.create",
        "display_name": None,
        "trace_id": uuid7(),
        "parent_id": None,
        "started_at": datetime.now(UTC),
        "attributes": {"imagegate": {"version": "0", "provider": "openai", "upstream_model": "x"}},
        "inputs": {"model": "bench/130k", "prompt": "a red fox", "n": 1, "size": "1024x1024"},
        "wb_user_id": None,
    }


async def generation(writer: GenerationRecorder) -> None:
    record = start_record()
    await writer.start(record, (), None)
    await writer.finish(
        record["id"],
        ended_at=datetime.now(UTC),
        output={"created": 1, "data": [{"b64_json": {"_type": "CustomWeaveType"}}]},
        summary={"usage": {"images": 1}, "weave": {"status": "success"}},
        exception=None,
        held=[],
        cost=0.04,
    )


async def measure(writer: GenerationRecorder, concurrency: int, total: int) -> str:
    gate = asyncio.Semaphore(concurrency)
    latencies: list[float] = []

    async def one() -> None:
        async with gate:
            started = time.perf_counter()
            await generation(writer)
            latencies.append((time.perf_counter() - started) * 1000)

    cpu, wall = time.process_time(), time.perf_counter()
    await asyncio.gather(*(one() for _ in range(total)))
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    return (
        f"c={concurrency:<3} {total / wall:7.0f} generations/s  cpu {cpu * 1000 / total:.3f} ms"
        f"  p50 {percentile(latencies, 0.5):.2f} ms  p99 {percentile(latencies, 0.99):.2f} ms"
    )


async def main(rounds: int) -> None:
    with tempfile.TemporaryDirectory(prefix="imagegate-bench-") as tmp:
        imagegate = Imagegate(Settings(data_dir=Path(tmp) / "data"))
        await imagegate.start()
        try:
            await imagegate.accounts.create_key("bench", PROJECT.split("/")[0])
            await imagegate.accounts.ensure_project(PROJECT)
            writer = imagegate.generation.writer
            await measure(writer, 8, 200)  # warm-up
            for concurrency, total in ((1, 1000), (64, 6000)):
                for _ in range(rounds):
                    print(await measure(writer, concurrency, total), flush=True)
        finally:
            await imagegate.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    uvloop.run(main(parser.parse_args().rounds))
