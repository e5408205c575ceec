"""LiteLLM's proxy against the same fake provider, for the gateway rows side by side.

Optional: it runs when a `litellm` command with the proxy's extras is found, in
IMAGEGATE_BENCH_LITELLM (a path), else in bench/.litellm-venv (what
`bash bench/litellm_venv.sh` makes: the pinned release in a venv of its own, as
`litellm[proxy]` pins its own versions of much that imagegate uses), else on PATH.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from bench._harness import Server, free_port, spawn


@functools.cache
def command() -> str | None:
    candidates = [
        os.environ.get("IMAGEGATE_BENCH_LITELLM"),
        str(Path(__file__).resolve().parent / ".litellm-venv" / "bin" / "litellm"),
        shutil.which("litellm"),
    ]
    for candidate in filter(None, candidates):
        path = Path(candidate)
        if not path.is_file():
            continue
        first = path.read_bytes().split(b"\n", 1)[0]
        python = first[2:].decode().strip() if first.startswith(b"#!") else sys.executable
        probe = subprocess.run(
            [python, "-c", "import litellm.proxy.proxy_server"],
            capture_output=True,
            env={**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"},
            timeout=120,
        )
        if probe.returncode == 0:
            return str(path)
    return None


def available() -> bool:
    return command() is not None


@functools.cache
def version() -> str:
    """The measured LiteLLM's version, as its own venv reports it."""
    litellm = command()
    if litellm is None:
        return "none"
    python = Path(litellm).parent / "python"
    probe = subprocess.run(
        [str(python), "-c", "import importlib.metadata as m; print(m.version('litellm'))"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    return f"litellm {probe.stdout.strip() or '?'} ({litellm})"


MASTER_KEY = "sk-bench-litellm-master-0123456789"


@dataclass
class Proxy:
    server: Server
    headers: ClassVar[dict[str, str]] = {"Authorization": f"Bearer {MASTER_KEY}"}

    def body(self, payload: str) -> dict[str, Any]:
        return {
            "model": f"bench-{payload}",
            "prompt": "a red fox in a blue forest",
            "n": 1,
            "size": "1024x1024",
        }


def start(work: Path, fakes: dict[str, Server]) -> Proxy | None:
    litellm = command()
    if litellm is None:
        return None
    config = work / "litellm.yaml"
    config.write_text(
        # A master key, as any deployment has: requests are authenticated, as imagegate's.
        f"general_settings:\n  master_key: {MASTER_KEY}\n"
        "model_list:\n"
        + "".join(
            f"  - model_name: bench-{payload}\n"
            "    litellm_params:\n"
            "      model: openai/bench\n"
            f"      api_base: {fake.url}/v1\n"
            "      api_key: sk-bench-0123456789abcdef\n"
            "    model_info:\n"
            "      mode: image_generation\n"
            for payload, fake in fakes.items()
        )
    )
    port = free_port()
    server = spawn(
        [litellm, "--config", str(config), "--host", "127.0.0.1", "--port", str(port)],
        work / "litellm.log",
        f"http://127.0.0.1:{port}",
        # Offline: the packaged price map, not a download.
        env={"LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_LOG": "ERROR"},
    )
    return Proxy(server)
