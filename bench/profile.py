"""Where a server's CPU goes under load: py-spy samples the thread holding the GIL
(`--gil`: the serial Python work that bounds one process's throughput) and the samples
are summed by the library their innermost frame is in, so each counts once.

py-spy (`pip install py-spy`) reads the process from outside: nothing in imagegate
changes, and `--nonblocking` keeps it from pausing the server while sampling.
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from bench._harness import Server

# Innermost-frame file patterns (py-spy shortens paths to `package/module.py`), first
# match wins: what each library does for a request.
CATEGORIES = [
    ("logging (access log)", r"(^|/)logging/|uvicorn/logging"),
    ("SQL (SQLAlchemy, aiosqlite)", r"sqlalchemy/|aiosqlite/|sqlite3/"),
    (
        "provider call (OpenAI SDK, httpx2, aiohttp)",
        r"(^|/)openai/|httpx2?/|httpcore2?/|h11/|anyio/|aiohttp/|yarl/|multidict/|"
        r"aiohappyeyeballs/|providers/transport|certifi|ssl\.py|cookiejar|(^|/)email/",
    ),
    ("pydantic", r"pydantic"),
    ("JSON", r"(^|/)json/|_json\.py"),
    ("image inspection (Pillow)", r"(^|/)PIL/"),
    ("base64 and hashing", r"(^|/)base64\.py|hashlib|imagegate/digest"),
    (
        "file store (temp, fsync, rename)",
        r"imagegate/store/files|tempfile\.py|pathlib\.py|posixpath|<frozen os>|(^|/)os\.py",
    ),
    ("HTTP server (uvicorn)", r"uvicorn/|httptools|uvloop"),
    ("framework (FastAPI, Starlette)", r"fastapi/|starlette/"),
    ("metrics (prometheus_client)", r"prometheus_client"),
    ("imagegate's own code", r"imagegate/"),
    ("event loop (uvloop: sockets, tasks)", r"asyncio/|selectors"),
    ("threads (to_thread, executors)", r"threading\.py|concurrent/|queue\.py"),
    (
        "Python runtime (typing, copy, abc, enum, ...)",
        r"typing\.py|copy\.py|<frozen|enum\.py|weakref|inspect\.py|contextlib|functools|uuid",
    ),
]
FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^:()]+)(?::\d+)?\)$")


@dataclass
class Sampler:
    process: subprocess.Popen[bytes]
    output: Path


def py_spy() -> str:
    found = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(found).exists():
        raise SystemExit("--profile needs py-spy: .venv/bin/pip install py-spy")
    return found


def start(server: Server, output: Path) -> Sampler:
    process = subprocess.Popen(
        [py_spy(), "record", "--pid", str(server.process.pid), "--format", "raw",
         "--output", str(output), "--rate", "250", "--nonblocking", "--gil",
         "--subprocesses"],  # imagegate's forked workers too
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    return Sampler(process, output)


def finish(sampler: Sampler) -> list[tuple[str, float]]:
    """Stop sampling; the shares of samples by category, largest first."""
    sampler.process.send_signal(signal.SIGINT)
    sampler.process.wait(timeout=60)
    return summarize(sampler.output.read_text())


def summarize(raw: str) -> list[tuple[str, float]]:
    """Shares of samples by category of their innermost Python frame."""
    counts: Counter[str] = Counter()
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = stack.split(";")
        counts[_category(frames)] += int(count)
    total = sum(counts.values()) or 1
    return [(name, n / total) for name, n in counts.most_common()]


def _category(frames: list[str]) -> str:
    for frame in reversed(frames):
        match = FRAME.match(frame.strip())
        if not match:
            continue
        path = match["file"]
        for name, pattern in CATEGORIES:
            if re.search(pattern, path):
                return name
        return f"other ({Path(path).name})"
    return "other"
