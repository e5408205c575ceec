"""What a Weave user does, run by tests/test_weave_sdk.py in its own process against a
live imagegate with only WANDB_BASE_URL and WANDB_API_KEY set (plus its own TMPDIR and
HOME). Prints a transcript, then one line `RESULT <json>` that the test checks.

Usage: python tests/weave_sdk_script.py ENTITY/PROJECT
"""

from __future__ import annotations

import io
import json
import os
import sys
import time
from typing import Any

os.environ["WEAVE_PRINT_CALL_LINK"] = "false"  # a quiet transcript

import httpx
import weave  # (after the setting, which weave reads at import)
from PIL import Image
from weave.type_wrappers.Content.content import Content

OPS = 100
results: dict[str, Any] = {}


def say(message: str) -> None:
    print(message, flush=True)


def contents(value: Any) -> list[Content]:
    """Every Content anywhere in a call's output (wherever the image shape puts it)."""
    if isinstance(value, Content):
        return [value]
    if isinstance(value, dict):
        return [c for v in value.values() for c in contents(v)]
    if isinstance(value, list):
        return [c for v in value for c in contents(v)]
    return []


def server_seconds(route_part: str, figure: str = "sum") -> float:
    """Seconds the server has spent answering routes containing `route_part` (or with
    figure="count", how many it answered), from its Prometheus metrics: what a timing
    owes to the server rather than to the client."""
    text = httpx.get(os.environ["WANDB_BASE_URL"] + "/metrics").text
    total = 0.0
    prefix = f"imagegate_http_request_duration_seconds_{figure}"
    for line in text.splitlines():
        if line.startswith(prefix) and route_part in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def file_status(project: str, digest: str) -> int:
    """Asked over plain HTTP: the client caches file contents it has read."""
    res = httpx.post(
        os.environ["WANDB_BASE_URL"] + "/traces/file/content",
        json={"project_id": project, "digest": digest},
        auth=("api", os.environ["WANDB_API_KEY"]),
    )
    return res.status_code


@weave.op
def render(prompt: str, size: int) -> Image.Image:
    colour = (200, 40, 40) if "red" in prompt else (40, 40, 200)
    return Image.new("RGB", (size, size), colour)


@weave.op
def pipeline(prompt: str) -> dict[str, Any]:
    return {"image": render(prompt, 32), "prompt": prompt}


@weave.op
def step(i: int) -> int:
    return i * 2


def main(project: str) -> None:
    server_before = server_seconds("/graphql") + server_seconds("/server_info")
    started = time.perf_counter()
    client = weave.init(project)
    results["init_s"] = round(time.perf_counter() - started, 3)
    server_s = server_seconds("/graphql") + server_seconds("/server_info") - server_before
    say(
        f"weave.init({project!r}): {results['init_s']:.3f} s "
        f"(of which the server spent {server_s * 1000:.0f} ms answering)"
    )

    out, root = pipeline.call("a red square")
    step(-1)  # saves the op, so the timed flush below sends only calls
    say(f"pipeline -> {sorted(out)}, image {out['image'].size}, call {root.id}")
    client.flush()  # the op definitions and first calls, before timing the batch

    server_before = server_seconds("calls/complete")
    for i in range(OPS):
        step(i)
    started = time.perf_counter()
    client.flush()
    results["flush_100_s"] = round(time.perf_counter() - started, 3)
    server_s = server_seconds("calls/complete") - server_before
    say(
        f"flush() after {OPS} op calls: {results['flush_100_s']:.3f} s "
        f"(of which the server spent {server_s * 1000:.0f} ms storing them)"
    )

    calls = list(client.get_calls())
    results["calls"] = len(calls)
    say(f"get_calls(): {len(calls)} calls")
    read = client.get_call(root.id)
    [child] = [c for c in calls if c.parent_id == root.id]
    image = read.output["image"]
    results["tree"] = {
        "root_op": read.op_name.split("/")[-1].split(":")[0],
        "child_op": child.op_name.split("/")[-1].split(":")[0],
        "same_trace": child.trace_id == root.trace_id,
        "image_size": list(image.size),
        "image_pixel": list(image.getpixel((0, 0))),
    }
    say(f"call.output['image'] read back: {image.size} {image.getpixel((0, 0))}")

    call = client.get_call(root.id)
    thumbs = call.feedback.add_reaction("👍")
    note = call.feedback.add_note("lovely red")
    client.flush()
    listed = list(client.get_call(root.id).feedback)
    results["feedback"] = sorted((f.feedback_type, json.dumps(f.payload)) for f in listed)
    say(f"feedback: {results['feedback']}")
    call.feedback.purge(thumbs)
    results["feedback_after_purge"] = [f.id for f in client.get_call(root.id).feedback]
    results["note_id"] = note
    say(f"after purge: {results['feedback_after_purge']}")

    call.set_display_name("Red square")
    client.flush()  # the client sends the update in the background
    results["display_name"] = client.get_call(root.id).display_name
    say(f"display name: {results['display_name']!r}")

    created = client.server.image_create(
        {
            "project_id": project,
            "inputs": {"model": "local/procedural", "prompt": "a green circle", "size": "256x256"},
        }
    )
    generated = client.get_call(created.weave_call_id)
    images = contents(generated.output)
    pixels = Image.open(io.BytesIO(images[0].data)) if images else None
    results["image_create"] = {
        "call_id": created.weave_call_id,
        "status": generated.summary["weave"]["status"],
        "images": len(images),
        "size": list(pixels.size) if pixels else None,
        "mimetype": images[0].mimetype if images else None,
    }
    say(f"image_create: {results['image_create']}")

    asked = server_seconds('"/project/stats"', "count")
    started = time.perf_counter()
    try:
        client.server.project_stats({"project_id": project})
        results["unserved"] = "no error"
    except Exception as exc:  # what the client raises for the 501
        results["unserved"] = str(exc)
    results["unserved_s"] = round(time.perf_counter() - started, 3)
    results["unserved_requests"] = server_seconds('"/project/stats"', "count") - asked
    say(
        f"an endpoint imagegate lacks: {results['unserved']} ({results['unserved_s']} s, "
        f"{results['unserved_requests']:.0f} request)"
    )

    raw_child = client.server.call_read({"project_id": project, "id": child.id}).call
    files = sorted(raw_child.output["files"].values())
    call.delete()
    results["deleted_image_files"] = files
    results["deleted_image_status"] = [file_status(project, d) for d in files]
    say(f"the deleted image's files now answer: {results['deleted_image_status']}")
    remaining = [c.id for c in client.get_calls()]
    results["deleted_gone"] = root.id not in remaining and child.id not in remaining
    results["after_delete"] = len(remaining)
    say(
        f"after call.delete(): {len(remaining)} calls; root and child gone: "
        f"{results['deleted_gone']}"
    )
    weave.finish()


if __name__ == "__main__":
    main(sys.argv[1])
    print("RESULT " + json.dumps(results), flush=True)
