"""The floor on imagegate's required stack: the floor's work through FastAPI and the
official openai SDK, and nothing else.

bench/floor.py is the work an image gateway cannot avoid on the cheapest Python stack
at hand (a bare ASGI handler, aiohttp). imagegate must serve through FastAPI and call
providers through the official SDK; this is the same work on those, done the plainest
way: one FastAPI route, one `images.generate` call (over imagegate's own transport, the
cheapest the SDK has been measured on), decode, hash, write to disk (temp file, fsync,
rename), answer with the image as base64. No database, keys, validation or access log,
and as many worker processes as imagegate runs. So imagegate's cost splits in two: this
floor over the bare one is the stack's, imagegate over this one is imagegate's own
(keys, recording, metadata, limits, metrics). `--no-fastapi` serves the same handler as
a bare ASGI app, to tell the framework's share from the SDK's.

    python bench/stack_floor.py --port 8300 --upstream http://127.0.0.1:8100 --dir /tmp/sf
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import json
import os
import sys
from collections.abc import Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import openai
import uvicorn
from fastapi import FastAPI, Response

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.floor import write_atomically
from imagegate.config import Settings
from imagegate.providers.transport import http_client


def generation(upstream: str, root: Path) -> tuple[Callable[[], Awaitable[bytes]], Any]:
    """The floor's work through the SDK (an answer's body), and the lifespan opening and
    closing the SDK's client."""
    clients: list[openai.AsyncOpenAI] = []

    @asynccontextmanager
    async def lifespan(_app: Any) -> Any:
        sdk = openai.AsyncOpenAI(
            api_key="sk-floor", base_url=f"{upstream}/v1", max_retries=0, http_client=http_client()
        )
        clients.append(sdk)
        yield
        await sdk.close()

    async def generate() -> bytes:
        answer = await clients[0].images.generate(
            model="floor", prompt="a red fox", n=1, size="1024x1024"
        )
        b64 = (answer.data or [])[0].b64_json or ""
        data = base64.b64decode(b64)
        digest = hashlib.sha256(data).hexdigest()
        await asyncio.to_thread(write_atomically, root, digest, data)
        return b'{"data":[{"b64_json":"%s"}],"digest":"%s"}' % (b64.encode(), digest.encode())

    return generate, lifespan


def fastapi_app(upstream: str, root: Path) -> FastAPI:
    generate, lifespan = generation(upstream, root)
    app = FastAPI(lifespan=lifespan)

    @app.post("/")
    async def create() -> Response:
        return Response(await generate(), media_type="application/json")

    return app


def bare_app(upstream: str, root: Path) -> Any:
    generate, lifespan = generation(upstream, root)

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            async with lifespan(app):
                await receive()  # startup
                await send({"type": "lifespan.startup.complete"})
                await receive()  # shutdown
            await send({"type": "lifespan.shutdown.complete"})
            return
        while (await receive()).get("more_body"):
            pass
        headers = [(b"content-type", b"application/json")]
        body = await generate()
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    return app


def app_from_env() -> Any:
    """The app in each worker process (uvicorn imports it by name to start workers)."""
    upstream, root, fastapi = json.loads(os.environ["STACK_FLOOR"])
    return (fastapi_app if fastapi else bare_app)(upstream, Path(root))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True)
    parser.add_argument("--dir", type=Path, required=True)
    parser.add_argument("--no-fastapi", action="store_true", help="a bare ASGI app instead")
    parser.add_argument(
        "--workers", type=int, default=Settings().worker_count(), help="default: imagegate's"
    )
    args = parser.parse_args()
    os.environ["STACK_FLOOR"] = json.dumps([args.upstream, str(args.dir), not args.no_fastapi])
    uvicorn.run(
        "bench.stack_floor:app_from_env",
        factory=True,
        workers=args.workers,
        host="127.0.0.1",
        port=args.port,
        log_level="warning",
        access_log=False,
    )


if __name__ == "__main__":
    main()
