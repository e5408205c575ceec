"""`imagegate generate`: images generated on a running server over its HTTP API, shown
running while the model works, and saved to files."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import httpx

from imagegate.weave_shape import answer_images

# Seconds of silence after which `generate` decides the server is gone (it sends a
# keep-alive byte every 15 s by default while a generation runs).
SILENT_SERVER_S = 300.0


def _while_running(send: Callable[[], httpx.Response], url: str, label: str) -> httpx.Response:
    """`send()`, showing on stderr that the generation is running and for how long."""
    from imagegate.web.render import format_elapsed

    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["response"] = send()
        except httpx.HTTPError as exc:
            outcome["error"] = exc

    worker = threading.Thread(target=run, daemon=True)
    started = time.monotonic()
    worker.start()
    # A terminal gets one line counting up; a log, a line at 5 s and every 30 s after.
    tty = sys.stderr.isatty()
    click.echo(label, nl=not tty, err=True)
    next_line = 5.0
    while worker.is_alive():
        worker.join(1.0)
        running = time.monotonic() - started
        if not worker.is_alive():
            break
        if tty:
            click.echo(f"\r{label}: running for {format_elapsed(running)}", nl=False, err=True)
        elif running >= next_line:
            click.echo(f"{label}: running for {format_elapsed(running)}", err=True)
            next_line += 30.0
    if tty:
        click.echo("", err=True)
    if "error" in outcome:
        raise click.ClickException(f"could not reach {url}: {outcome['error']}")
    response: httpx.Response = outcome["response"]
    return response


@click.command()
@click.argument("prompt")
@click.option("--model", "-m", default="local/procedural", show_default=True)
@click.option("-n", "n", default=1, show_default=True, type=int, help="Number of images.")
@click.option("--size", help="WIDTHxHEIGHT.")
@click.option("--seed", type=int, help="Seed, for models that take one.")
@click.option("--project", required=True, help="entity/project")
@click.option(
    "--out", type=click.Path(file_okay=False, path_type=Path), default=".", show_default=True
)
@click.option(
    "--url",
    envvar="IMAGEGATE_URL",
    default="http://127.0.0.1:8000",
    show_default=True,
    help="The server [env IMAGEGATE_URL].",
)
@click.option(
    "--api-key", envvar="IMAGEGATE_API_KEY", required=True, help="Your key [env IMAGEGATE_API_KEY]."
)
def generate(
    prompt: str,
    model: str,
    n: int,
    size: str | None,
    seed: int | None,
    project: str,
    out: Path,
    url: str,
    api_key: str,
) -> None:
    """Generate images on a running server and save them to --out.

    The server is --url or IMAGEGATE_URL (default http://127.0.0.1:8000); the key is
    --api-key or IMAGEGATE_API_KEY (a member's key: `imagegate keys create`, or the one
    `serve` printed on first start).
    """
    inputs: dict[str, Any] = {"model": model, "prompt": prompt, "n": n}
    if size:
        inputs["size"] = size
    if seed is not None:
        inputs["seed"] = seed
    started = time.monotonic()
    # The server keeps the connection busy while the model works (a space every
    # keep-alive interval), so only silence far longer than that means it is gone:
    # this never gives up before the server's own timeout does.
    res = _while_running(
        lambda: httpx.post(
            f"{url.rstrip('/')}/image/create",
            json={"project_id": project, "inputs": inputs},
            auth=("api", api_key),
            headers={"Imagegate-Keep-Alive": "whitespace"},
            timeout=httpx.Timeout(10.0, read=SILENT_SERVER_S),
        ),
        url,
        f"Generating {n} image(s)",
    )
    body = res.json() if res.headers.get("content-type", "").startswith("application/json") else {}
    if res.status_code != 200:
        raise click.ClickException(f"HTTP {res.status_code}: {body.get('detail', res.text)}")
    response = body["response"]
    if "error" in response:
        raise click.ClickException(
            f"generation failed ({response.get('error_type')}): {response['error']}"
            f" [call {body.get('weave_call_id')}]"
        )
    out.mkdir(parents=True, exist_ok=True)
    saved = []
    images = answer_images(response)
    with click.progressbar(length=len(images), label="Saving", file=sys.stderr) as bar:
        for index, image in enumerate(images):
            # The answer names each image by its Weave Content reference: fetch the bytes.
            got = httpx.post(
                f"{url.rstrip('/')}/file/content",
                json={"project_id": project, "digest": image.digest},
                auth=("api", api_key),
                timeout=600,
            )
            if got.status_code != 200:
                raise click.ClickException(f"could not read image {image.digest}: {got.text}")
            ext = image.mimetype.rsplit("/", 1)[-1]
            path = out / f"{body['weave_call_id']}-{index}.{ext}"
            path.write_bytes(got.content)
            saved.append(path)
            bar.update(1)
    for path in saved:
        click.echo(str(path))
    click.echo(
        f"call {body.get('weave_call_id')} · {len(saved)} image(s) · "
        f"{time.monotonic() - started:.2f}s",
        err=True,
    )
