"""Time to the first partial image of a streamed generation: straight to the upstream
(bench/fake_provider.py speaking OpenAI's SSE) versus through imagegate's OpenAI door
(`POST /v1/images/generations`, `stream: true`), and the difference: what the door adds.

Each request is timed from sending it to having the whole first
`image_generation.partial_image` event (a realistic 1024x1024 PNG, ~175 KB of base64).
Requests run one at a time, alternating between the two paths.

    .venv/bin/python bench/stream_first_partial.py --runs 100
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._harness import admin_key, machine, percentile, start_imagegate, start_script

PARTIAL = b"image_generation.partial_image"


def first_partial_ms(client: httpx.Client, url: str, headers: dict[str, str]) -> float:
    body = {
        "model": "gpt-image-2",
        "prompt": "a red fox in a blue forest",
        "stream": True,
        "partial_images": 2,
    }
    started = time.perf_counter()
    with client.stream("POST", url, json=body, headers=headers) as res:
        if res.status_code != 200:
            raise RuntimeError(f"{url}: {res.status_code} {res.read()[:300]!r}")
        buffer = b""
        elapsed = None
        for chunk in res.iter_raw():  # read it all, as a client would
            if elapsed is None:
                buffer += chunk
                start = buffer.find(PARTIAL)
                if start >= 0 and buffer.find(b"\n\n", start) >= 0:
                    elapsed = (time.perf_counter() - started) * 1000
    if elapsed is None:
        raise RuntimeError(f"{url}: no partial image in the stream")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--partial-delay-ms", type=float, default=50.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        fake = start_script(
            "fake_provider.py",
            ["--partial-delay-ms", str(args.partial_delay_ms)],
            root / "fake.log",
        )
        models = root / "models.toml"
        models.write_text(f'[models."gpt-image-2"]\nbase_url = "{fake.url}/v1"\n')
        (root / "data").mkdir()
        gate = start_imagegate(
            root / "data", env={"OPENAI_API_KEY": "sk-bench-0123456789"}, models=models
        )
        try:
            key = admin_key(gate)
            direct_url = f"{fake.url}/v1/images/generations"
            door_url = f"{gate.url}/v1/images/generations"
            direct_headers = {"Authorization": "Bearer sk-bench-0123456789"}
            door_headers = {"Authorization": f"Bearer {key}", "OpenAI-Project": "bench"}
            direct: list[float] = []
            door: list[float] = []
            with httpx.Client(timeout=60) as client:
                for _ in range(5):  # warm both paths (connections, imports, the project)
                    first_partial_ms(client, direct_url, direct_headers)
                    first_partial_ms(client, door_url, door_headers)
                for _ in range(args.runs):
                    direct.append(first_partial_ms(client, direct_url, direct_headers))
                    door.append(first_partial_ms(client, door_url, door_headers))
        finally:
            gate.stop()
            fake.stop()
    print(machine())
    print(
        f"time to the first partial image, {args.runs} streamed generations each, "
        f"upstream sends a partial every {args.partial_delay_ms:g} ms\n"
    )
    print(f"{'path':28} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} {'min ms':>8}")
    for name, values in (("upstream directly", direct), ("through imagegate", door)):
        print(
            f"{name:28} {percentile(values, 0.5):8.1f} {percentile(values, 0.9):8.1f} "
            f"{percentile(values, 0.99):8.1f} {min(values):8.1f}"
        )
    added = [b - a for a, b in zip(direct, door, strict=True)]
    print(
        f"{'added by imagegate':28} {percentile(door, 0.5) - percentile(direct, 0.5):8.1f} "
        f"{percentile(door, 0.9) - percentile(direct, 0.9):8.1f}"
    )
    print(
        f"\nper pair (door minus direct, same moment): p50 {percentile(added, 0.5):.1f} ms, "
        f"p90 {percentile(added, 0.9):.1f} ms; goal: under 20 ms at p50"
    )


if __name__ == "__main__":
    main()
