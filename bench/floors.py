"""The two floors and imagegate at one payload, interleaved round after round.

bench/run.py measures each server once per payload; on a shared 2-core machine one
measurement moves with the host's load. Here the floor (bench/floor.py), the stack floor
(bench/stack_floor.py: the same work through FastAPI and the official SDK) and
imagegate's /image/create take turns, `--rounds` times, so their ratios are measured
under the same conditions, and their spread shows.

    .venv/bin/python bench/floors.py                  # 130k, 3 rounds
    .venv/bin/python bench/floors.py --payload 1.5m --rounds 2
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._harness import admin_key, machine, start_imagegate, start_script
from bench.fake_provider import PAYLOADS
from bench.run import KEY, catalog, measure, ratio, start_floor

REQUESTS = {"130k": (1000, 5000), "1.5m": (100, 600), "4k": (16, 128)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--payload", choices=PAYLOADS, default="130k")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="imagegate-floors-"))
    fake = start_script("fake_provider.py", ["--payload", args.payload], work / "fake.log")
    servers = [fake]
    try:
        models = work / "models.toml"
        models.write_text(catalog({args.payload: fake}))
        data = work / "gateway" / "data"
        data.mkdir(parents=True)
        imagegate = start_imagegate(data, env={"OPENAI_API_KEY": KEY}, models=models)
        servers.append(imagegate)
        floor = start_floor("floor.py", fake, work / "floor")
        stack = start_floor("stack_floor.py", fake, work / "stack-floor")
        servers += [floor, stack]
        key = ("api", admin_key(imagegate))
        body = {
            "project_id": "admin/bench",
            "inputs": {"model": f"bench/{args.payload}", "prompt": "a red fox in a blue forest"},
        }
        print(f"machine: {machine()}; payload {args.payload}")
        for round_ in range(1, args.rounds + 1):
            for c, total in zip((1, 64), REQUESTS[args.payload], strict=True):
                floor_m = measure(floor, "/", {}, c, total, None)
                stack_m = measure(stack, "/", {}, c, total, None)
                ours = measure(imagegate, "/image/create", body, c, total, key)
                cells = []
                for name, m in (("floor", floor_m), ("stack floor", stack_m), ("imagegate", ours)):
                    errors = f" {m.result.errors} errors" if m.result.errors else ""
                    figure = f"p50 {m.p50:.2f} ms" if c == 1 else f"{m.result.rate:.0f}/s"
                    cells.append(f"{name} {figure} p99 {m.p99:.0f} cpu {m.cpu_ms:.2f}{errors}")
                pairs = ((stack_m, floor_m), (ours, floor_m), (ours, stack_m))
                ratios = [ratio(a, b, c) for a, b in pairs]
                print(f"round {round_} c={c}: " + " | ".join(cells))
                print(
                    f"    stack floor/floor {ratios[0]}, imagegate/floor {ratios[1]}, "
                    f"imagegate/stack floor {ratios[2]}",
                    flush=True,
                )
    finally:
        for server in servers:
            server.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
