"""Weave objects (ops, datasets, user objects), versioned and content-addressed.

An object's digest is computed as Weave computes it (`weave/trace/serialization/
digest.py`): the SHA-256 of its JSON with sorted keys, in Weave's digest alphabet. So a
ref the client builds from the answer is the ref Weave's own server would give.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from imagegate.digest import weave_digest
from imagegate.errors import DigestMismatch
from imagegate.store.db import advisory_lock
from imagegate.store.query_terms import MAX_SORT_FIELDS
from imagegate.store.tables import objects

OP_TYPE = "Op"


def json_digest(value: Any) -> str:
    """Weave's digest of a JSON value: canonical JSON (sorted keys), then `weave_digest`."""
    return weave_digest(json.dumps(value, sort_keys=True).encode())


def object_kind(val: Any) -> str:
    is_op = (
        isinstance(val, dict)
        and val.get("_type") == "CustomWeaveType"
        and (val.get("weave_type") or {}).get("type") == OP_TYPE
    )
    return "op" if is_op else "object"


def object_classes(val: Any) -> tuple[str | None, str | None]:
    """(base_object_class, leaf_object_class) from Weave's `_class_name` and `_bases`:
    the base is the class just below Weave's `Object` in the hierarchy."""
    if not isinstance(val, dict) or not isinstance(val.get("_class_name"), str):
        return None, None
    leaf = val["_class_name"]
    bases = [b for b in val.get("_bases") or [] if isinstance(b, str)]
    if "Object" not in bases:
        return None, leaf
    above = bases[: bases.index("Object")]
    return (above[-1] if above else leaf), leaf


class ObjectStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def create(
        self,
        project_id: str,
        object_id: str,
        val: Any,
        *,
        wb_user_id: str,
        expected_digest: str | None = None,
    ) -> str:
        """Store a version of `object_id` (a no-op if this exact value is stored); its digest."""
        digest = json_digest(val)
        if expected_digest is not None and expected_digest != digest:
            raise DigestMismatch(digest, expected_digest)
        try:
            await self._store(project_id, object_id, digest, val, wb_user_id)
        except IntegrityError:
            # The same version stored concurrently (SQLite has no advisory lock):
            # it is there now, so storing again finds it.
            await self._store(project_id, object_id, digest, val, wb_user_id)
        return digest

    async def _store(
        self, project_id: str, object_id: str, digest: str, val: Any, wb_user_id: str
    ) -> None:
        key = _key(project_id, object_id)
        async with self.engine.begin() as conn:
            await advisory_lock(conn, f"imagegate:obj:{project_id}:{object_id}")
            existing = (
                await conn.execute(
                    sa.select(objects.c.deleted_at).where(key, objects.c.digest == digest)
                )
            ).first()
            if existing is not None and existing.deleted_at is None:
                return
            if existing is not None:  # stored again after a delete: live again
                await conn.execute(
                    objects.update().where(key, objects.c.digest == digest).values(deleted_at=None)
                )
            else:
                base, leaf = object_classes(val)
                versions = await conn.scalar(sa.select(sa.func.count()).where(key)) or 0
                await conn.execute(
                    objects.insert().values(
                        project_id=project_id,
                        object_id=object_id,
                        digest=digest,
                        kind=object_kind(val),
                        base_object_class=base,
                        leaf_object_class=leaf,
                        val=val,
                        version_index=int(versions),
                        is_latest=0,
                        wb_user_id=wb_user_id,
                        created_at=datetime.now(UTC),
                    )
                )
            await _mark_latest(conn, project_id, object_id)

    async def read(
        self, project_id: str, object_id: str, digest: str, *, metadata_only: bool = False
    ) -> dict[str, Any] | None:
        """A version by digest, by "latest" or by "v<n>"; deleted versions too (the caller
        tells "deleted" from "never existed")."""
        where = [_key(project_id, object_id)]
        if digest == "latest":
            where.append(objects.c.is_latest == 1)
        elif digest[:1] == "v" and digest[1:].isdigit():
            where.append(objects.c.version_index == int(digest[1:]))
        else:
            where.append(objects.c.digest == digest)
        async with self.engine.connect() as conn:
            row = (await conn.execute(sa.select(objects).where(*where))).first()
        return None if row is None else to_wire(row._mapping, metadata_only=metadata_only)

    async def query(
        self,
        project_id: str,
        *,
        object_ids: Sequence[str] | None = None,
        is_op: bool | None = None,
        latest_only: bool = False,
        base_object_classes: Sequence[str] | None = None,
        exclude_base_object_classes: Sequence[str] | None = None,
        leaf_object_classes: Sequence[str] | None = None,
        sort_by: Sequence[Mapping[str, str]] | None = None,
        limit: int | None = None,
        offset: int | None = None,
        metadata_only: bool = False,
    ) -> list[dict[str, Any]]:
        terms = [objects.c.project_id == project_id, objects.c.deleted_at.is_(None)]
        if object_ids:
            terms.append(objects.c.object_id.in_(object_ids))
        if is_op is not None:
            terms.append(objects.c.kind == ("op" if is_op else "object"))
        if latest_only:
            terms.append(objects.c.is_latest == 1)
        if base_object_classes:
            terms.append(objects.c.base_object_class.in_(base_object_classes))
        if exclude_base_object_classes:
            terms.append(
                sa.or_(
                    objects.c.base_object_class.is_(None),
                    objects.c.base_object_class.not_in(exclude_base_object_classes),
                )
            )
        if leaf_object_classes:
            terms.append(objects.c.leaf_object_class.in_(leaf_object_classes))
        order = []
        if sort_by and len(sort_by) > MAX_SORT_FIELDS:
            raise ValueError(f"sort_by has {len(sort_by)} items; at most {MAX_SORT_FIELDS} allowed")
        for item in sort_by or []:
            column = objects.c.get(item["field"])
            if column is None or item["field"] == "val":
                raise ValueError(f"cannot sort objects by {item['field']!r}")
            order.append(column.desc() if item.get("direction") == "desc" else column.asc())
        order += [objects.c.created_at.asc(), objects.c.object_id, objects.c.version_index]
        stmt = sa.select(objects).where(*terms).order_by(*order).limit(limit).offset(offset or None)
        async with self.engine.connect() as conn:
            rows = (await conn.execute(stmt)).all()
        return [to_wire(r._mapping, metadata_only=metadata_only) for r in rows]

    async def delete(
        self, project_id: str, object_id: str, digests: Sequence[str] | None = None
    ) -> list[dict[str, Any]]:
        """Delete versions (all when `digests` is None); the versions deleted."""
        where = [_key(project_id, object_id), objects.c.deleted_at.is_(None)]
        if digests is not None:
            where.append(objects.c.digest.in_(digests))
        async with self.engine.begin() as conn:
            await advisory_lock(conn, f"imagegate:obj:{project_id}:{object_id}")
            rows = (await conn.execute(sa.select(objects).where(*where))).all()
            if rows:
                await conn.execute(
                    objects.update().where(*where).values(deleted_at=datetime.now(UTC))
                )
                await _mark_latest(conn, project_id, object_id)
        return [to_wire(r._mapping) for r in rows]


def _key(project_id: str, object_id: str) -> sa.ColumnElement[bool]:
    return sa.and_(objects.c.project_id == project_id, objects.c.object_id == object_id)


async def _mark_latest(conn: AsyncConnection, project_id: str, object_id: str) -> None:
    key = _key(project_id, object_id)
    newest = await conn.scalar(
        sa.select(sa.func.max(objects.c.version_index)).where(key, objects.c.deleted_at.is_(None))
    )
    await conn.execute(
        objects.update()
        .where(key)
        .values(
            is_latest=sa.case((objects.c.version_index == newest, 1), else_=0)
            if newest is not None
            else 0
        )
    )


def to_wire(row: Mapping[str, Any], *, metadata_only: bool = False) -> dict[str, Any]:
    deleted = row["deleted_at"]
    return {
        "project_id": row["project_id"],
        "object_id": row["object_id"],
        "digest": row["digest"],
        "version_index": row["version_index"],
        "is_latest": row["is_latest"],
        "kind": row["kind"],
        "base_object_class": row["base_object_class"],
        "leaf_object_class": row["leaf_object_class"],
        "val": {} if metadata_only else row["val"],
        "created_at": row["created_at"].isoformat(),
        "deleted_at": None if deleted is None else deleted.isoformat(),
        "wb_user_id": row["wb_user_id"],
    }
