"""A provider for benchmarks: tests/fake_openai.py's server, answering every generation
after a fixed delay with a realistic PNG as base64 (`--payload`: `130k`, 1024x1024 of
`local/procedural`'s, ~130 KB; `1.5m`, the same with photographic grain, ~1.6 MB like a
GPT-image 1024x1024; `4k`, 3840x2160 with that grain). Each answer's PNG differs by a
text chunk, so no two are the same file (as with a real provider) and nothing is skipped
by content addressing.

    python bench/fake_provider.py --port 8100 --delay-ms 500 --payload 1.5m
"""

from __future__ import annotations

import argparse
import base64
import io
import itertools
import random
import sys
import threading
import time
import zlib
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from PIL import Image, ImageChops

from imagegate.providers.procedural import render_png
from tests.fake_openai import FakeOpenAI, Reply

PAYLOADS = ("130k", "1.5m", "4k")
PROMPT = "a red fox in a blue forest at dusk, orange sky"


def realistic_png(payload: str = "130k") -> bytes:
    """The PNG every answer is a variant of. Grain (random low bits, fixed seed) makes
    the larger ones compress like a photograph instead of like flat colour."""
    width, height = (3840, 2160) if payload == "4k" else (1024, 1024)
    # procedural renders up to 2048 a side: the 4K image is a 1920x1080 render scaled up
    png = render_png(
        PROMPT,
        7,
        width // 2 if payload == "4k" else width,
        height // 2 if payload == "4k" else height,
        0,
    )
    if payload == "130k":
        return png
    with Image.open(io.BytesIO(png)) as img:
        smooth = img.convert("RGB").resize((width, height), Image.Resampling.BILINEAR)
    noise = random.Random(7).randbytes(width * height * 3)
    grain = Image.frombytes("RGB", (width, height), noise).point(lambda v: v & 0x0F)
    out = io.BytesIO()
    ImageChops.add(smooth, grain).save(out, "PNG")
    return out.getvalue()


def png_variants(png: bytes) -> tuple[bytes, bytes]:
    """The PNG split before its IEND chunk: a chunk inserted there keeps it valid."""
    cut = png.rindex(b"IEND") - 4  # the chunk's 4-byte length comes first
    return png[:cut], png[cut:]


def text_chunk(text: bytes) -> bytes:
    data = b"imagegate-bench\x00" + text
    crc = zlib.crc32(b"tEXt" + data)
    return len(data).to_bytes(4, "big") + b"tEXt" + data + crc.to_bytes(4, "big")


def responder(delay_s: float, partial_delay_s: float = 0.0, payload: str = "130k") -> Any:
    head, tail = png_variants(realistic_png(payload))
    counter = itertools.count()

    def respond(_body: dict[str, Any]) -> Reply:
        png = head + text_chunk(str(next(counter)).encode()) + tail
        body = b'{"created":%d,"data":[{"b64_json":"%s"}]}' % (
            int(time.time()),
            base64.b64encode(png),
        )
        # Streamed requests get server-sent events instead: each partial image (the same
        # realistic PNG) `partial_delay_s` after the previous one, then the final image.
        return Reply(
            body=body,
            delay_s=delay_s,
            partial_delay_s=partial_delay_s,
            partial_image=png,
            image=png,
        )

    return respond


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--delay-ms", type=float, default=0.0)
    parser.add_argument("--partial-delay-ms", type=float, default=0.0)
    parser.add_argument("--payload", choices=PAYLOADS, default="130k")
    args = parser.parse_args()
    # Idle connections kept a minute: at 4K and c=64 a pooled connection can sit idle past
    # the tests' 5 s, and the floors (no retries) failed requests on the fake closing it.
    server = FakeOpenAI(keep_alive_s=60.0)
    server.port, server.url = args.port, f"http://127.0.0.1:{args.port}"
    server.responder = responder(args.delay_ms / 1000, args.partial_delay_ms / 1000, args.payload)
    server.start()
    # What the fake keeps of each request is for tests; here it would only grow.
    while True:
        time.sleep(5)
        server.requests.clear()
        if not any(t.name != "MainThread" for t in threading.enumerate()):
            return


if __name__ == "__main__":
    main()
