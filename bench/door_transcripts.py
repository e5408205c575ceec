"""Transcripts of the official SDKs talking to imagegate's OpenAI door: starts
`imagegate serve` (local/procedural, no keys), then runs the `openai` Python SDK (sync and
async: generate, edit with two images and a mask, a stream, errors) and the `openai` npm
package (tests/node/door.mjs), printing what each call sent and got back.

    .venv/bin/python bench/door_transcripts.py > transcripts.txt
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import openai
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._harness import REPO, admin_key, start_imagegate


def png(colour: tuple[int, int, int], alpha_hole: bool = False) -> bytes:
    img = Image.new("RGBA" if alpha_hole else "RGB", (256, 256), (*colour, 255))
    if alpha_hole:
        img.paste((0, 0, 0, 0), (0, 0, 96, 96))
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def short(value: Any) -> Any:
    """A response as JSON, each base64 image shortened to its length and first bytes."""
    if hasattr(value, "model_dump"):
        value = value.model_dump(exclude_none=True)
    if isinstance(value, dict):
        return {
            k: f"<{len(v)} base64 chars: {v[:16]}…>"
            if k == "b64_json" and isinstance(v, str)
            else short(v)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [short(v) for v in value]
    return value


def show(title: str, call: str, result: Any) -> None:
    print(f"\n### {title}\n>>> {call}")
    print(json.dumps(short(result), indent=2, ensure_ascii=False))


def python_sdk(url: str, key: str) -> None:
    client = openai.OpenAI(api_key=key, base_url=f"{url}/v1", max_retries=0, project="sdk")
    print(f"# openai {openai.__version__} (Python), base_url={url}/v1, project='sdk'")
    result = client.images.generate(model="local/procedural", prompt="a red fox", size="256x256")
    show("sync generate", "client.images.generate(model='local/procedural', ...)", result)
    result = client.images.edit(
        model="local/procedural",
        prompt="a green meadow",
        image=[
            ("a.png", png((200, 30, 30)), "image/png"),
            ("b.png", png((30, 30, 200)), "image/png"),
        ],
        mask=("mask.png", png((0, 0, 0), alpha_hole=True), "image/png"),
    )
    show(
        "sync edit, two images and a mask", "client.images.edit(image=[a, b], mask=m, ...)", result
    )
    stream = client.images.generate(
        model="local/procedural",
        prompt="violet waves",
        size="256x256",
        stream=True,
        partial_images=2,
    )
    show(
        "sync stream",
        "for event in client.images.generate(stream=True, partial_images=2)",
        [event for event in stream],
    )
    for model, extra in (("dall-e-3", {}), ("local/procedural", {"n": 11})):
        try:
            client.images.generate(model=model, prompt="x", **extra)
        except openai.APIStatusError as exc:
            show(
                f"error: {type(exc).__name__}",
                f"client.images.generate(model={model!r}, {extra})",
                {"status": exc.status_code, "body": exc.body},
            )

    async def run_async() -> None:
        async with openai.AsyncOpenAI(api_key=key, base_url=f"{url}/v1", max_retries=0) as aclient:
            result = await aclient.images.generate(
                model="local/procedural", prompt="teal fish", size="256x256"
            )
            show("async generate", "await aclient.images.generate(...)", result)
            stream = await aclient.images.edit(
                model="local/procedural",
                prompt="orange sunset",
                image=("a.png", png((10, 120, 10)), "image/png"),
                stream=True,
                partial_images=1,
            )
            show(
                "async edit stream",
                "async for event in await aclient.images.edit(stream=True)",
                [event async for event in stream],
            )

    asyncio.run(run_async())


def node_sdk(url: str, key: str, tmp: Path) -> None:
    node = shutil.which("node")
    if node is None or not (REPO / "tests/node/node_modules/openai").is_dir():
        print("\n# Node: not installed (scripts/deps/node-openai.sh)")
        return
    files = {
        "IMAGE_A": png((200, 30, 30)),
        "IMAGE_B": png((30, 30, 200)),
        "MASK": png((0, 0, 0), alpha_hole=True),
    }
    env = {**os.environ, "IMAGEGATE_URL": url, "IMAGEGATE_KEY": key}
    for name, data in files.items():
        (tmp / f"{name}.png").write_bytes(data)
        env[name] = str(tmp / f"{name}.png")
    version = json.loads((REPO / "tests/node/node_modules/openai/package.json").read_text())
    node_version = subprocess.check_output([node, "--version"], text=True).strip()
    print(f"\n# openai {version['version']} (npm) under Node {node_version}")
    run = subprocess.run(
        [node, "door.mjs"],
        cwd=REPO / "tests/node",
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    print(run.stdout or run.stderr)


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "data").mkdir()
        server = start_imagegate(root / "data", env={}, models=None)
        try:
            key = admin_key(server)
            python_sdk(server.url, key)
            node_sdk(server.url, key, root)
        finally:
            server.stop()


if __name__ == "__main__":
    main()
