"""Cold start: from `imagegate serve` being run to the first 200 on `/ready`.

    .venv/bin/python bench/cold_start.py                # 5 runs each, 1 and default workers
    .venv/bin/python bench/cold_start.py --runs 10 --workers 1

Each run starts a real server process (SQLite + files) and polls /ready every 5 ms. The
first run of each series starts on an empty data dir (the schema is created); the
others restart on the data it left (the schema is checked, recovery runs)."""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._harness import IMAGEGATE, free_port


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) of process `pid` so far: on shared cores, the part of
    the wall time that is the server's own work."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def once(data: Path, workers: int | None) -> tuple[float, float]:
    port = free_port()
    args = [str(IMAGEGATE), "serve", "--port", str(port), "--data-dir", str(data)]
    if workers is not None and workers >= 0:  # -1: no flag (a version without --workers)
        args += ["--workers", str(workers)]
    started = time.perf_counter()
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        with httpx.Client(timeout=1) as client:
            while True:
                try:
                    if client.get(f"http://127.0.0.1:{port}/ready").status_code == 200:
                        return time.perf_counter() - started, cpu_seconds(proc.pid)
                except httpx.HTTPError:
                    pass
                if proc.poll() is not None:
                    raise RuntimeError("the server exited")
                if time.perf_counter() - started > 60:
                    raise RuntimeError("no /ready within 60 s")
                time.sleep(0.005)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--workers", type=int, action="append")
    args = parser.parse_args()
    load = os.getloadavg()
    print(f"cold start to /ready, {os.cpu_count()} cores, load {load[0]:.2f} {load[1]:.2f}")
    for workers in args.workers or [1, None]:
        with tempfile.TemporaryDirectory(prefix="imagegate-cold-") as tmp:
            data = Path(tmp) / "data"
            runs = [once(data, workers) for _ in range(args.runs)]
        times = [wall for wall, _ in runs]
        cpu = [used for _, used in runs]
        label = f"--workers {workers}" if workers is not None and workers >= 0 else "default"
        print(
            f"{label:>16}: empty data dir {times[0] * 1000:.0f} ms; restarts "
            f"p50 {statistics.median(times[1:]) * 1000:.0f} ms, "
            f"max {max(times[1:]) * 1000:.0f} ms; CPU of the (supervising) process "
            f"p50 {statistics.median(cpu) * 1000:.0f} ms"
        )


if __name__ == "__main__":
    main()
