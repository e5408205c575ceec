"""Calls of any op (the user's own `@weave.op` pipelines too) as trees by trace, with
their inputs and outputs, and the images inside them pulled out to show inline."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from imagegate.digest import is_digest

MAX_JSON = 4000  # characters of inputs/outputs shown per call; the call JSON has it all
IMAGE_FILES = (".png", ".jpg", ".jpeg", ".webp", ".gif")


@dataclass(frozen=True)
class Media:
    """A file inside a call's value: an image to show, or a Content whose type the
    metadata file tells (`metadata` is that file's digest)."""

    digest: str
    metadata: str | None = None


@dataclass
class CallNode:
    id: str
    op: str
    display_name: str | None
    status: str
    started_at: str
    latency_ms: float | None
    exception: str | None
    inputs: str
    output: str
    input_media: list[Media]
    output_media: list[Media]
    children: list[CallNode] = field(default_factory=list)

    def all_media(self) -> Iterable[Media]:
        yield from self.input_media
        yield from self.output_media


def op_label(op_name: str) -> str:
    """`weave:///e/p/op/make_poster:abc` → `make_poster`; other names as they are."""
    if op_name.startswith("weave:///") and "/op/" in op_name:
        return op_name.rsplit("/op/", 1)[1].rsplit(":", 1)[0]
    return op_name


def extract_media(value: Any) -> tuple[Any, list[Media]]:
    """The value with each file-backed object replaced by a short placeholder, and the
    media found (in order)."""
    found: list[Media] = []

    def walk(item: Any) -> Any:
        if isinstance(item, dict):
            files = item.get("files")
            if item.get("_type") == "CustomWeaveType" and isinstance(files, dict):
                kind = str((item.get("weave_type") or {}).get("type", "file"))
                media = _media(kind, files)
                if media is not None:
                    found.append(media)
                    return f"<{kind.rsplit('.', 1)[-1]} {media.digest[:10]}…>"
            return {k: walk(v) for k, v in item.items()}
        if isinstance(item, list):
            return [walk(v) for v in item]
        return item

    return walk(value), found


def _media(kind: str, files: dict[str, Any]) -> Media | None:
    digests = {name: d for name, d in files.items() if isinstance(d, str) and is_digest(d)}
    if kind.endswith("Content") and "content" in digests:
        return Media(digests["content"], digests.get("metadata.json"))
    for name, digest in digests.items():
        if name.lower().endswith(IMAGE_FILES):
            return Media(digest)
    return None


def _json(value: Any) -> str:
    text = json.dumps(value, indent=2, ensure_ascii=False, default=str)
    return text if len(text) <= MAX_JSON else text[:MAX_JSON] + "\n…"


def node_of(call: dict[str, Any]) -> CallNode:
    inputs, input_media = extract_media(call.get("inputs") or {})
    output, output_media = extract_media(call.get("output"))
    weave = (call.get("summary") or {}).get("weave") or {}
    return CallNode(
        id=call["id"],
        op=op_label(call["op_name"]),
        display_name=call.get("display_name"),
        status=weave.get("status", "running"),
        started_at=call["started_at"],
        latency_ms=weave.get("latency_ms"),
        exception=call.get("exception"),
        inputs=_json(inputs),
        output=_json(output),
        input_media=input_media,
        output_media=output_media,
    )


def build_trees(calls: Iterable[dict[str, Any]]) -> list[CallNode]:
    """Roots (calls whose parent is not among `calls`) with their descendants, in the
    order given; children in call order."""
    nodes = {c["id"]: (c.get("parent_id"), node_of(c)) for c in calls}
    roots = []
    for parent_id, node in nodes.values():
        if parent_id in nodes and parent_id != node.id:
            nodes[parent_id][1].children.append(node)
        else:
            roots.append(node)
    return roots
