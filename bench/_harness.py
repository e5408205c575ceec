"""What every benchmark needs: server processes, their peak memory, a load generator,
percentiles and a description of the machine. No pytest, no network beyond loopback."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import platform
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import httpx

REPO = Path(__file__).resolve().parent.parent
IMAGEGATE = Path(sys.executable).parent / "imagegate"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    """A server process on loopback, its output going to `log`."""

    process: subprocess.Popen[bytes]
    url: str
    log: Path
    pss: PssSampler | None = None

    def pids(self) -> list[int]:
        """The server's process and its descendants (imagegate's forked workers)."""
        found, todo = [], [self.process.pid]
        while todo:
            pid = todo.pop()
            found.append(pid)
            with contextlib.suppress(OSError):
                for task in Path(f"/proc/{pid}/task").iterdir():
                    todo += [int(c) for c in (task / "children").read_text().split()]
        return found

    def peak_rss_mib(self) -> float:
        """The sum of each process's peak resident memory since start or the last
        `reset_peak` (pages forked workers share count once per process: an upper bound)."""
        total = summed_kib(self.pids(), "status", "VmHWM")
        return total / 1024 if total else float("nan")

    def peak_pss_mib(self) -> float:
        """The highest proportional set size summed over the processes, sampled since the
        last `reset_peak(pss=True)`: a page the forked workers share counts once in total, divided
        among them. A sample every `PssSampler.interval`, so a shorter spike may be missed."""
        return self.pss.stop() if self.pss is not None else float("nan")

    def cpu_seconds(self) -> float:
        """User and system CPU time the processes have used so far."""
        ticks = 0
        for pid in self.pids():
            with contextlib.suppress(OSError):
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                ticks += int(fields[11]) + int(fields[12])
        return ticks / os.sysconf("SC_CLK_TCK")

    def reset_peak(self, *, pss: bool = False) -> None:
        # Writing 5 to clear_refs resets VmHWM to the current RSS (Linux >= 4.0).
        # Where that is not allowed, the peak covers the whole run so far.
        for pid in self.pids():
            with contextlib.suppress(OSError):
                Path(f"/proc/{pid}/clear_refs").write_text("5")
        if self.pss is not None:
            self.pss.stop()
        # Sampling costs the load generator's process a little CPU: only when asked.
        self.pss = PssSampler(self.pids) if pss else None

    def memory(self) -> str:
        """The peaks since `reset_peak`, as the benches print them."""
        return f"peak PSS {self.peak_pss_mib():.0f} MiB (RSS summed {self.peak_rss_mib():.0f})"

    def stop(self) -> None:
        if self.pss is not None:
            self.pss.stop()
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def summed_kib(pids: list[int], proc_file: str, field: str) -> int:
    """`field` (in kB) of /proc/<pid>/`proc_file`, summed over `pids` (gone ones: 0)."""
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            text = Path(f"/proc/{pid}/{proc_file}").read_text()
            if match := re.search(rf"^{field}:\s+(\d+) kB", text, re.MULTILINE):
                total += int(match[1])
    return total


class PssSampler:
    """Samples the PSS (/proc/<pid>/smaps_rollup) summed over a process tree in a thread
    and keeps the highest sum. VmHWM, summed, counts every page forked processes share
    once per process; PSS divides a shared page among its sharers, so the sum is the
    memory the tree really holds."""

    interval = 0.1  # seconds

    def __init__(self, pids: Callable[[], list[int]]) -> None:
        self.pids = pids
        self.peak_kib = 0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def sample(self) -> int:
        total = summed_kib(self.pids(), "smaps_rollup", "Pss")
        self.peak_kib = max(self.peak_kib, total)
        return total

    def _run(self) -> None:
        while not self._done.wait(self.interval):
            self.sample()

    def stop(self) -> float:
        """Stop sampling (after a last sample); the peak in MiB."""
        if not self._done.is_set():
            self._done.set()
            self._thread.join()
            self.sample()
        return self.peak_kib / 1024 if self.peak_kib else float("nan")


def spawn(args: list[str], log: Path, url: str, *, env: dict[str, str] | None = None) -> Server:
    """Start `args` (a server that will listen at `url`) and wait until it answers."""
    process = subprocess.Popen(
        args,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        # This tree's own src/ first: the bench measures the checkout it is run from.
        env={**os.environ, "PYTHONPATH": f"{REPO / 'src'}{os.pathsep}{REPO}", **(env or {})},
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{args[:2]} exited:\n{log.read_text()}")
        try:
            httpx.get(f"{url}/health", timeout=2)  # any answer: it is listening
            return Server(process, url, log)
        except httpx.HTTPError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError(f"{args[:2]} did not start:\n{log.read_text()}")


def start_imagegate(
    data_dir: Path, *, env: dict[str, str], models: Path | None, extra: list[str] | None = None
) -> Server:
    """`imagegate serve` on a free port, with `extra` arguments (e.g. `--workers 1`)."""
    port = free_port()
    args = [str(IMAGEGATE), "serve", "--port", str(port), "--data-dir", str(data_dir)]
    if models is not None:
        args += ["--models", str(models)]
    args += extra or []
    log = data_dir.parent / f"imagegate-{port}.log"
    return spawn(args, log, f"http://127.0.0.1:{port}", env=env)


def start_script(script: str, args: list[str], log: Path) -> Server:
    """One of bench/'s own servers (`--port` is added)."""
    port = free_port()
    command = [sys.executable, str(REPO / "bench" / script), "--port", str(port), *args]
    return spawn(command, log, f"http://127.0.0.1:{port}")


def admin_key(server: Server) -> str:
    """The key a first start prints (see `imagegate serve`)."""
    match = re.search(r"^\s+(ig_\S+)\s*$", server.log.read_text(), re.MULTILINE)
    if not match:
        raise RuntimeError("no admin key in the server's output")
    return match[1]


@dataclass
class LoadResult:
    latencies_ms: list[float] = field(default_factory=list)
    errors: int = 0
    error_kinds: collections.Counter[str] = field(default_factory=collections.Counter)
    elapsed_s: float = 0.0

    @property
    def rate(self) -> float:
        return len(self.latencies_ms) / self.elapsed_s if self.elapsed_s else 0.0


async def run_load(
    url: str,
    path: str,
    body: dict[str, Any],
    *,
    concurrency: int,
    total: int,
    auth: tuple[str, str] | None = None,
    headers: dict[str, str] | None = None,
    ok: Callable[[int, bytes], bool] = lambda status, _body: status == 200,
    on_started: Callable[[], None] | None = None,
) -> LoadResult:
    """`total` POSTs from `concurrency` clients, after one untimed wave that opens the
    connections; each latency is one request's, as a client sees it.

    The client is aiohttp: httpx's connection pool costs a whole core at 64 connections
    here (~120 requests/s against the fake provider alone), which would measure the
    load generator instead of the servers; aiohttp does ~2,900 requests/s on 0.2 cores.
    """
    connector = aiohttp.TCPConnector(limit=concurrency)
    timeout = aiohttp.ClientTimeout(total=600)
    basic = aiohttp.BasicAuth(*auth) if auth else None
    async with aiohttp.ClientSession(
        url, connector=connector, timeout=timeout, auth=basic, headers=headers
    ) as session:
        kinds: collections.Counter[str] = collections.Counter()

        async def one() -> tuple[float, bool]:
            started = time.perf_counter()
            try:
                async with session.post(path, json=body) as res:
                    data = await res.read()
                    good = ok(res.status, data)
                    if not good:
                        kinds[f"{res.status} {data[:60]!r}"] += 1
            except aiohttp.ClientError as exc:
                good = False
                kinds[type(exc).__name__] += 1
            return (time.perf_counter() - started) * 1000, good

        await asyncio.gather(*(one() for _ in range(min(concurrency, total))))
        if on_started is not None:
            on_started()
        result = LoadResult()
        remaining = total

        async def worker() -> None:
            nonlocal remaining
            while remaining > 0:
                remaining -= 1
                latency, good = await one()
                result.latencies_ms.append(latency)
                result.errors += not good

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        result.elapsed_s = time.perf_counter() - started
        result.error_kinds = kinds
        return result


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def machine() -> str:
    cpu = "unknown CPU"
    try:
        found = re.search(r"^model name\s*:\s*(.+)$", Path("/proc/cpuinfo").read_text(), re.M)
        cpu = found[1].strip() if found else cpu
    except OSError:
        pass
    mem = ""
    try:
        kib = int(re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text())[1])  # type: ignore[index]
        mem = f", {kib / 1024 / 1024:.0f} GiB RAM"
    except (OSError, TypeError):
        pass
    return (
        f"{cpu}, {os.cpu_count()} cores{mem}; Linux {platform.release()}; "
        f"Python {platform.python_version()}"
    )


def print_table(headers: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    line = lambda cells: "  ".join(  # noqa: E731
        c.ljust(w) if i < 2 else c.rjust(w)
        for i, (c, w) in enumerate(zip(cells, widths, strict=True))
    )
    print(line(headers))
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print(line(row))
