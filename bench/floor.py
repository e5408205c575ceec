"""The floor: the work an image gateway cannot avoid, and nothing else.

A bare ASGI handler (no framework, no database, no validation, no access log) that, per
request, gets the same payload from the same fake provider with one HTTP call (aiohttp,
the cheapest Python client at hand), decodes the base64, hashes it, writes it to disk
the way imagegate does (temp file, fsync, rename) and answers with the image as base64.
imagegate's overhead is compared with this one's.

    python bench/floor.py --port 8200 --upstream http://127.0.0.1:8100 --dir /tmp/floor
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import aiohttp
import uvicorn


def write_atomically(root: Path, digest: str, data: bytes) -> None:
    path = root / digest[:2] / digest
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def make_app(upstream: str, root: Path) -> Any:
    session: aiohttp.ClientSession | None = None

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        nonlocal session
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    # The OpenAI SDK's pool limit, so neither side queues for connections.
                    connector = aiohttp.TCPConnector(limit=1000)
                    session = aiohttp.ClientSession(upstream, connector=connector)
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    if session is not None:
                        await session.close()
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        assert session is not None
        while (await receive()).get("more_body"):
            pass  # the caller's body: a prompt; the floor does not look at it
        if scope["method"] != "POST":
            await _answer(send, 200, b"{}")
            return
        async with session.post(
            "/v1/images/generations",
            json={"model": "floor", "prompt": "a red fox", "n": 1, "size": "1024x1024"},
        ) as res:
            b64 = json.loads(await res.read())["data"][0]["b64_json"]
        data = base64.b64decode(b64)
        digest = hashlib.sha256(data).hexdigest()
        await asyncio.to_thread(write_atomically, root, digest, data)
        body = b'{"data":[{"b64_json":"%s"}],"digest":"%s"}' % (b64.encode(), digest.encode())
        await _answer(send, 200, body)

    return app


async def _answer(send: Any, status: int, body: bytes) -> None:
    headers = [(b"content-type", b"application/json")]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True)
    parser.add_argument("--dir", type=Path, required=True)
    args = parser.parse_args()
    app = make_app(args.upstream, args.dir)
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
