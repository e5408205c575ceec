"""A provider for benchmarks: tests/fake_openai.py's server, answering every generation
after a fixed delay with a realistic 1024x1024 PNG (~130 KB, `local/procedural`'s) as
base64. Each answer's PNG differs by a text chunk, so no two are the same file (as with
a real provider) and nothing is skipped by content addressing.

    python bench/fake_provider.py --port 8100 --delay-ms 500
"""

from __future__ import annotations

import argparse
import base64
import itertools
import sys
import threading
import time
import zlib
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from imagegate.providers.procedural import render_png
from tests.fake_openai import FakeOpenAI, Reply


def realistic_png() -> bytes:
    return render_png("a red fox in a blue forest at dusk, orange sky", 7, 1024, 1024, 0)


def png_variants(png: bytes) -> tuple[bytes, bytes]:
    """The PNG split before its IEND chunk: a chunk inserted there keeps it valid."""
    cut = png.rindex(b"IEND") - 4  # the chunk's 4-byte length comes first
    return png[:cut], png[cut:]


def text_chunk(text: bytes) -> bytes:
    data = b"imagegate-bench\x00" + text
    crc = zlib.crc32(b"tEXt" + data)
    return len(data).to_bytes(4, "big") + b"tEXt" + data + crc.to_bytes(4, "big")


def responder(delay_s: float, partial_delay_s: float = 0.0) -> Any:
    head, tail = png_variants(realistic_png())
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
    args = parser.parse_args()
    server = FakeOpenAI()
    server.port, server.url = args.port, f"http://127.0.0.1:{args.port}"
    server.responder = responder(args.delay_ms / 1000, args.partial_delay_ms / 1000)
    server.start()
    # What the fake keeps of each request is for tests; here it would only grow.
    while True:
        time.sleep(5)
        server.requests.clear()
        if not any(t.name != "MainThread" for t in threading.enumerate()):
            return


if __name__ == "__main__":
    main()
