"""Long generations at full length (issue 16): a provider that answers after 150 s, met
by the unchanged Weave client (which gives up after 30 s of silence and then asks again),
by OpenAI's SDK streaming and not, directly and through a proxy that closes connections
after 60 s of silence (as nginx's `proxy_read_timeout` does by default); and a hung
provider behind a model with a 5 s timeout. Each case counts the requests the provider
received: every one of them would be billed.

    .venv/bin/python bench/long_generation.py [--delay 150] [--out report.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx
import openai

from bench._harness import admin_key, free_port, start_imagegate
from tests.fake_openai import FakeOpenAI, Reply

PROJECT = "admin/long"
PROXY_IDLE_S = 60.0


async def idle_cutting_proxy(target_port: int, idle_s: float) -> tuple[asyncio.Server, int]:
    """A TCP proxy that closes a connection after `idle_s` without a byte either way."""

    async def handle(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        up_r, up_w = await asyncio.open_connection("127.0.0.1", target_port)
        last = [time.monotonic()]

        async def pipe(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            while data := await r.read(65536):
                last[0] = time.monotonic()
                w.write(data)
                await w.drain()

        tasks = [
            asyncio.create_task(pipe(client_r, up_w)),
            asyncio.create_task(pipe(up_r, client_w)),
        ]
        try:
            while not all(t.done() for t in tasks) and time.monotonic() - last[0] < idle_s:
                await asyncio.sleep(0.2)
        except asyncio.CancelledError:
            pass  # the bench is over
        finally:
            for task in tasks:
                task.cancel()
            client_w.close()
            up_w.close()

    port = free_port()
    return await asyncio.start_server(handle, "127.0.0.1", port), port


def weave_create(url: str, key: str, prompt: str) -> dict[str, Any]:
    from weave.trace_server_bindings.remote_http_trace_server import RemoteHTTPTraceServer

    server = RemoteHTTPTraceServer(url, password=key)
    res = server.image_create(
        {"project_id": PROJECT, "inputs": {"model": "gpt-image-2", "prompt": prompt}}
    )
    return {"images": len(res.response.get("data") or []), "error": res.response.get("error")}


def openai_create(
    url: str, key: str, prompt: str, *, stream: bool, keepalive: bool = True
) -> dict[str, Any]:
    headers = {"OpenAI-Project": PROJECT}
    if keepalive:
        headers["Imagegate-Keep-Alive"] = "whitespace"
    client = openai.OpenAI(base_url=f"{url}/v1", api_key=key, default_headers=headers)
    if stream:
        events = list(client.images.generate(model="gpt-image-2", prompt=prompt, stream=True))
        return {"images": sum(e.type.endswith("completed") for e in events), "error": None}
    res = client.images.generate(model="gpt-image-2", prompt=prompt)
    return {"images": len(res.data or []), "error": None}


def hung(url: str, key: str, prompt: str) -> dict[str, Any]:
    res = httpx.post(
        f"{url}/image/create",
        json={"project_id": PROJECT, "inputs": {"model": "bench/hung", "prompt": prompt}},
        auth=("api", key),
        timeout=120,
    )
    response = res.json()["response"]
    return {"images": len(response.get("data") or []), "error": response.get("error_type")}


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--delay", type=float, default=150.0)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    fake = FakeOpenAI()
    fake.responder = lambda body: Reply(delay_s=3600 if "hung" in body["prompt"] else args.delay)
    fake.start()
    tmp = Path(tempfile.mkdtemp(prefix="long-generation-"))
    models = tmp / "models.toml"
    models.write_text(f"""
[models."gpt-image-2"]
base_url = "{fake.url}/v1"

[models."bench/hung"]
alias_of = "gpt-image-2"
timeout_s = 5
timeout_rules = []
""")
    server = start_imagegate(
        tmp / "data", env={"OPENAI_API_KEY": "sk-bench-0123456789"}, models=models
    )
    proxy, proxy_port = await idle_cutting_proxy(int(server.url.rsplit(":", 1)[1]), PROXY_IDLE_S)
    proxied = f"http://127.0.0.1:{proxy_port}"
    key = admin_key(server)
    cases: dict[str, Callable[[], dict[str, Any]]] = {
        "weave client (30 s timeout), direct": lambda: weave_create(
            server.url, key, "weave direct"
        ),
        "weave client, via 60 s idle proxy": lambda: weave_create(proxied, key, "weave proxied"),
        "openai SDK stream, via 60 s idle proxy": lambda: openai_create(
            proxied, key, "openai stream", stream=True
        ),
        "openai SDK JSON + keep-alive header, via proxy": lambda: openai_create(
            proxied, key, "openai json", stream=False
        ),
        # Control: without keep-alive the proxy cuts each attempt at 60 s of silence; the
        # SDK asks twice more, and its retries join the first attempt (still one request).
        "control: openai SDK JSON, no keep-alive, via proxy": lambda: openai_create(
            proxied, key, "openai control", stream=False, keepalive=False
        ),
        "hung provider, model timeout 5 s": lambda: hung(server.url, key, "hung"),
    }
    prompts = [
        "weave direct",
        "weave proxied",
        "openai stream",
        "openai json",
        "openai control",
        "hung",
    ]

    async def run(name: str, case: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        started = time.monotonic()
        try:
            outcome = await asyncio.to_thread(case)
        except Exception as exc:
            outcome = {"images": 0, "error": f"{type(exc).__name__}: {exc}"}
        return {"case": name, "seconds": round(time.monotonic() - started, 1), **outcome}

    try:
        results = await asyncio.gather(*(run(n, c) for n, c in cases.items()))
    finally:
        proxy.close()
        server.stop()
        fake.stop()
    for result, prompt in zip(results, prompts, strict=True):
        result["upstream_requests"] = sum(r.body.get("prompt") == prompt for r in fake.requests)
    report = {"provider_delay_s": args.delay, "proxy_idle_s": PROXY_IDLE_S, "results": results}
    text = json.dumps(report, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    asyncio.run(main())
