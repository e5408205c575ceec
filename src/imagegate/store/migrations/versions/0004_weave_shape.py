"""Weave's image shape for image-generation calls already stored.

Before: each image at `output.data[i].image` (a Content reference whose metadata.json
was imagegate's own), no `model`, provider usage as sent. After, as new calls are
written: the Content reference at `data[i].b64_json` (or `data[i].url` for calls that
asked for URLs), with a metadata.json shaped as weave's `Content` writes it; `model`
set; usage with `prompt_tokens`, `completion_tokens`, `total_tokens` added; partial
failures listed in the output too. So old and new calls read the same.

The metadata file records the image's SHA-256 in hex, which the stored Weave digest
cannot give back, so the images are read from the file store (handed in by
`imagegate.store.db.migrate`). Calls are rewritten in batches by id, so memory stays
bounded whatever the table's size. Finished idempotency answers kept in the old form
are dropped (a retry of one generates again; keys live 24 h by default).

Revision ID: 0004_weave_shape
Revises: 0003
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.util import await_only

from imagegate.store.tables import JSONType

revision = "0004_weave_shape"
down_revision = "0003"
branch_labels = None
depends_on = None

log = logging.getLogger("imagegate.migrations")

BATCH = 500
CONCURRENCY = 16  # file reads and writes in flight at once
OP_NAME = "weave.image_generation_create"
CONTENT_TYPE = "weave.type_wrappers.Content.content.Content"
EXTENSIONS = {"image/png": ".png", "image/jpeg": ".jpg", "image/webp": ".webp"}
URL_EXTENSIONS = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp"}

# Frozen: the columns this revision reads and writes, as they are at revision 0003.
calls = sa.table(
    "calls",
    sa.column("id", sa.String),
    sa.column("project_id", sa.String),
    sa.column("op_name", sa.String),
    sa.column("inputs", JSONType),
    sa.column("output", JSONType),
    sa.column("summary", JSONType),
)
idempotency_keys = sa.table("idempotency_keys", sa.column("state", sa.String))


def _metadata_file(
    size: int, sha256: str, digest: str, mimetype: str, index: int, schema: str
) -> bytes:
    """weave's Content metadata.json, as imagegate writes it at this revision."""
    extension = EXTENSIONS.get(mimetype, "")
    if schema == "url":
        filename = f"{digest}.{URL_EXTENSIONS.get(mimetype, 'bin')}"
        extension = "." + filename.rsplit(".", 1)[1]
        content_type, encoding = "bytes", "utf-8"
    else:
        kind = mimetype.split("/", 1)[0]
        filename = f"{'file' if kind == 'application' else kind}-{sha256[:4]}{extension}"
        content_type, encoding = "base64", "base64"
    metadata = {
        "size": size,
        "mimetype": mimetype,
        "digest": sha256,
        "filename": filename,
        "content_type": content_type,
        "input_type": "str",
        "encoding": encoding,
        "metadata": {"source_index": index, "_original_schema": schema},
        "extension": extension,
    }
    return json.dumps(metadata).encode()


def _usage(usage: Any) -> dict[str, Any]:
    usage = dict(usage) if isinstance(usage, dict) else {}
    prompt = usage.get("prompt_tokens") or usage.get("input_tokens") or 0
    completion = usage.get("completion_tokens") or usage.get("output_tokens") or 0
    total = usage.get("total_tokens") or prompt + completion
    added = {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": total}
    return {**usage, **added}


def _is_old(output: Any) -> bool:
    data = output.get("data") if isinstance(output, dict) else None
    return isinstance(data, list) and any(isinstance(i, dict) and "image" in i for i in data)


# (project, image digest, mimetype, source index, schema) of one image of one call
ImageKey = tuple[str, str, str, int, str]


def _images(row: Any) -> list[ImageKey]:
    inputs = row.inputs if isinstance(row.inputs, dict) else {}
    schema = "url" if inputs.get("response_format") == "url" else "b64_json"
    keys = []
    for index, item in enumerate(row.output["data"]):
        if isinstance(item, dict) and isinstance(item.get("image"), dict):
            digest = (item["image"].get("files") or {}).get("content")
            facts = item.get("content") if isinstance(item.get("content"), dict) else {}
            if isinstance(digest, str):
                mimetype = facts.get("mimetype") or "image/png"
                keys.append((row.project_id, digest, mimetype, index, schema))
    return keys


async def _write_metadata(files: Any, wanted: set[ImageKey]) -> dict[ImageKey, str | None]:
    """Each image's new metadata.json, stored; its digest (None: the image is missing).
    Each image is read once, CONCURRENCY files at a time (an object store is slow one by
    one, fast in parallel)."""
    limit = asyncio.Semaphore(CONCURRENCY)
    by_image: dict[tuple[str, str], list[ImageKey]] = {}
    for key in wanted:
        by_image.setdefault((key[0], key[1]), []).append(key)
    written: dict[ImageKey, str | None] = {}

    async def one(project: str, digest: str, keys: list[ImageKey]) -> None:
        async with limit:
            image = await files.get(project, digest)
        if image is None:
            log.warning("image %s of %s is missing: metadata left as it was", digest, project)
            written.update(dict.fromkeys(keys))
            return
        size, sha256 = len(image), hashlib.sha256(image).hexdigest()
        for key in keys:
            meta = _metadata_file(size, sha256, digest, key[2], key[3], key[4])
            async with limit:
                written[key] = await files.put(project, meta)

    await asyncio.gather(*(one(p, d, keys) for (p, d), keys in by_image.items()))
    return written


def _new_output(row: Any, metadata: dict[ImageKey, str | None]) -> dict[str, Any]:
    inputs = row.inputs if isinstance(row.inputs, dict) else {}
    summary = row.summary if isinstance(row.summary, dict) else {}
    output = row.output
    schema = "url" if inputs.get("response_format") == "url" else "b64_json"
    keys = {key[3]: key for key in _images(row)}
    data = []
    for index, item in enumerate(output["data"]):
        if not isinstance(item, dict) or "image" not in item:
            data.append(item)
            continue
        ref = dict(item["image"])
        ref_files = dict(ref.get("files") or {})
        if index in keys and (meta := metadata.get(keys[index])) is not None:
            ref_files["metadata.json"] = meta
        ref["files"] = ref_files
        new: dict[str, Any] = {schema: ref}
        if item.get("revised_prompt"):
            new["revised_prompt"] = item["revised_prompt"]
        new["content"] = item.get("content") if isinstance(item.get("content"), dict) else {}
        data.append(new)
    result: dict[str, Any] = {
        "created": output.get("created"),
        "data": data,
        "model": inputs.get("model"),
        "size": output.get("size", inputs.get("size")),
        "output_format": output.get("output_format"),
        **{k: inputs[k] for k in ("quality", "background") if k in inputs},
        "usage": _usage(output.get("usage")),
    }
    if isinstance(summary.get("errors"), list) and summary["errors"]:
        result["errors"] = summary["errors"]
    return result


def _old_output(row: Any) -> dict[str, Any]:
    output = dict(row.output)
    data = []
    for item in output.get("data") or []:
        key = next((k for k in ("b64_json", "url") if isinstance(item.get(k), dict)), None)
        if key is None:
            data.append(item)
            continue
        old = {"image": item[key], "content": item.get("content") or {}}
        if item.get("revised_prompt"):
            old["revised_prompt"] = item["revised_prompt"]
        data.append(old)
    return {
        "created": output.get("created"),
        "data": data,
        "size": output.get("size"),
        "output_format": output.get("output_format"),
        "usage": {
            k: v
            for k, v in (output.get("usage") or {}).items()
            if k not in ("prompt_tokens", "completion_tokens")
        },
    }


def _rewrite(convert: Callable[[list[Any]], dict[str, dict[str, Any]]]) -> int:
    """Rewrite image-generation calls' outputs, BATCH rows at a time in id order:
    `convert(rows)` gives the new output by call id for the rows to change. How many
    were rewritten."""
    conn = op.get_bind()
    update = (
        calls.update()
        .where(calls.c.id == sa.bindparam("b_id"))
        .values(output=sa.bindparam("b_output", type_=JSONType))
    )
    last = ""
    rewritten = 0
    while True:
        rows = conn.execute(
            sa.select(calls)
            .where(calls.c.op_name == OP_NAME, calls.c.id > last)
            .order_by(calls.c.id)
            .limit(BATCH)
        ).all()
        if not rows:
            return rewritten
        last = rows[-1].id
        changes = [{"b_id": i, "b_output": new} for i, new in convert(rows).items()]
        if changes:
            conn.execute(update, changes)
            rewritten += len(changes)


def upgrade() -> None:
    files = op.get_context().config.attributes.get("files")

    def convert(rows: list[Any]) -> dict[str, dict[str, Any]]:
        old = [row for row in rows if _is_old(row.output)]
        if not old:
            return {}
        if files is None:
            raise RuntimeError(
                "migration 0004_weave_shape needs the file store to rewrite stored calls: "
                "run it through imagegate (imagegate serve / imagegate.store.db.migrate)"
            )
        wanted = {key for row in old for key in _images(row)}
        # Alembic runs in SQLAlchemy's greenlet bridge: the async file store is awaited here.
        metadata = await_only(_write_metadata(files, wanted))
        return {row.id: _new_output(row, metadata) for row in old}

    count = _rewrite(convert)
    if count:
        log.info("0004_weave_shape: rewrote %d stored calls in Weave's image shape", count)
    # Finished answers kept for idempotent replays are in the old form: drop them.
    op.get_bind().execute(idempotency_keys.delete().where(idempotency_keys.c.state == "done"))


def downgrade() -> None:
    def convert(rows: list[Any]) -> dict[str, dict[str, Any]]:
        return {
            row.id: _old_output(row)
            for row in rows
            if isinstance(row.output, dict) and "data" in row.output and not _is_old(row.output)
        }

    _rewrite(convert)
    op.get_bind().execute(idempotency_keys.delete().where(idempotency_keys.c.state == "done"))
