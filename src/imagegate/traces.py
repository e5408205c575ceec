"""What the trace-server endpoints do beyond storing rows: the caller's identity and
tenancy on every item, deletes that purge unreferenced files, refs resolved across
objects and tables, and call reads enriched with feedback and expanded refs.

The API routers and the web gallery both call these, so both behave the same.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote

from sqlalchemy.ext.asyncio import AsyncEngine

from imagegate.errors import BadRequest
from imagegate.idempotency import IdempotencyStore
from imagegate.ids import uuid7
from imagegate.names import split_project_id
from imagegate.service import OP_NAME
from imagegate.store import AccountStore, Principal
from imagegate.store.accounts import authorize
from imagegate.store.call_writes import CallWriter
from imagegate.store.feedback import FeedbackStore, call_ref
from imagegate.store.files import FileStore
from imagegate.store.objects import ObjectStore
from imagegate.store.purge import file_digests, purge_unreferenced
from imagegate.store.weave_tables import TableStore
from imagegate.wire import (
    CallComplete,
    CallEnd,
    CallStart,
    FeedbackCreate,
    FeedbackQueryReq,
    FeedbackReplaceReq,
)

REF_PREFIX = "weave:///"
ENRICH_BATCH = 100  # calls per feedback lookup while streaming
MAX_REF_HOPS = 32  # a ref that resolves to a ref...: bounded, never a loop


def _start_row(start: CallStart | CallComplete, caller: Principal) -> dict[str, Any]:
    call_id = start.id or uuid7()
    return {
        "id": call_id,
        "project_id": start.project_id,
        "op_name": start.op_name,
        "display_name": start.display_name,
        "trace_id": start.trace_id or call_id,
        "parent_id": start.parent_id,
        "started_at": start.started_at,
        "ended_at": None,
        "attributes": start.attributes,
        "inputs": start.inputs,
        "output": None,
        "summary": None,
        "exception": None,
        "wb_user_id": caller.user_id,  # always the caller's own
        "thread_id": start.thread_id,
        "turn_id": start.turn_id,
        "wb_run_id": start.wb_run_id,
    }


class Traces:
    def __init__(
        self,
        engine: AsyncEngine,
        accounts: AccountStore,
        files: FileStore,
        idempotency: IdempotencyStore,
    ) -> None:
        self.engine = engine
        self.accounts = accounts
        self.files = files
        self.idempotency = idempotency
        self.calls = CallWriter(engine)
        self.objects = ObjectStore(engine)
        self.tables = TableStore(engine)
        self.feedback = FeedbackStore(engine)

    async def _projects(self, caller: Principal, project_ids: Iterable[str]) -> None:
        """Authorize every project a batch names, then make sure each exists."""
        unique = sorted(set(project_ids))
        for project_id in unique:
            authorize(caller, project_id, generate=True)
        for project_id in unique:
            await self.accounts.ensure_project(project_id)

    # --- calls -----------------------------------------------------------------------

    async def complete(
        self, caller: Principal, batch: Sequence[CallComplete], project_id: str | None = None
    ) -> None:
        """Store finished calls; with `project_id` (the v2 route's), every item must be in it."""
        if project_id is not None:
            authorize(caller, project_id, generate=True)
            _all_in(project_id, (c.project_id for c in batch))
        await self._projects(caller, (c.project_id for c in batch))
        rows = []
        for call in batch:
            row = _start_row(call, caller)
            row.update(
                ended_at=call.ended_at,
                output=call.output,
                summary=call.summary,
                exception=call.exception,
            )
            rows.append(row)
        await self.calls.insert(rows)

    async def start(
        self, caller: Principal, starts: Sequence[CallStart], project_id: str | None = None
    ) -> list[dict[str, str]]:
        if project_id is not None:
            authorize(caller, project_id, generate=True)
            _all_in(project_id, (s.project_id for s in starts))
        await self._projects(caller, (s.project_id for s in starts))
        rows = [_start_row(start, caller) for start in starts]
        await self.calls.insert(rows)
        return [{"id": r["id"], "trace_id": r["trace_id"]} for r in rows]

    async def end(
        self, caller: Principal, ends: Sequence[CallEnd], project_id: str | None = None
    ) -> None:
        if project_id is not None:
            authorize(caller, project_id, generate=True)
            _all_in(project_id, (e.project_id for e in ends))
        for pid in {e.project_id for e in ends}:
            authorize(caller, pid, generate=True)
        await self.calls.end(
            [
                {
                    "id": e.id,
                    "project_id": e.project_id,
                    "ended_at": e.ended_at,
                    "output": e.output,
                    "summary": e.summary,
                    "exception": e.exception,
                }
                for e in ends
            ]
        )

    async def rename(
        self, caller: Principal, project_id: str, call_id: str, name: str | None
    ) -> bool:
        authorize(caller, project_id, generate=True)
        # Weave sends "" to remove a display name.
        return await self.calls.set_display_name(project_id, call_id, name or None)

    async def delete_calls(
        self, caller: Principal, project_id: str, call_ids: Sequence[str]
    ) -> int:
        """Delete calls with their descendants, then purge the files only they referenced."""
        authorize(caller, project_id, generate=True)
        deleted = await self.calls.delete(project_id, call_ids, datetime.now(UTC))
        generations = [c["id"] for c in deleted if c["op_name"] == OP_NAME]
        await self.idempotency.forget_calls(project_id, generations)
        await self.feedback.purge_refs(project_id, [call_ref(project_id, c["id"]) for c in deleted])
        digests: set[str] = set()
        for call in deleted:
            digests |= file_digests(call["output"]) | file_digests(call["inputs"])
        await purge_unreferenced(self.engine, self.files, project_id, digests)
        return len(deleted)

    async def enrich(
        self,
        caller: Principal,
        project_id: str,
        calls: AsyncIterator[dict[str, Any]],
        *,
        include_feedback: bool,
        expand_columns: Sequence[str],
    ) -> AsyncIterator[dict[str, Any]]:
        """Calls as read, with feedback and expanded refs added a batch at a time."""
        if not include_feedback and not expand_columns:
            async for call in calls:
                yield call
            return
        batch: list[dict[str, Any]] = []
        async for call in calls:
            batch.append(call)
            if len(batch) == ENRICH_BATCH:
                for done in await self._enrich(
                    caller, project_id, batch, include_feedback, expand_columns
                ):
                    yield done
                batch = []
        for done in await self._enrich(caller, project_id, batch, include_feedback, expand_columns):
            yield done

    async def _enrich(
        self,
        caller: Principal,
        project_id: str,
        batch: list[dict[str, Any]],
        include_feedback: bool,
        expand_columns: Sequence[str],
    ) -> list[dict[str, Any]]:
        if include_feedback and batch:
            await self.with_feedback(project_id, batch)
        if expand_columns:
            await self.expand(caller, batch, expand_columns)
        return batch

    async def with_feedback(self, project_id: str, calls: Sequence[dict[str, Any]]) -> None:
        """Put each call's feedback at `summary.weave.feedback`, as Weave's server does."""
        refs = {call_ref(project_id, c["id"]): c for c in calls}
        found = await self.feedback.for_refs(project_id, list(refs))
        for ref, call in refs.items():
            summary = call.setdefault("summary", {}) or {}
            summary.setdefault("weave", {})["feedback"] = found.get(ref, [])
            call["summary"] = summary

    async def expand(
        self, caller: Principal, calls: Sequence[dict[str, Any]], columns: Sequence[str]
    ) -> None:
        """Replace refs at these dotted paths (`output`, `inputs.model`...) by their values.

        Refs into projects the caller may not use, or malformed ones, stay as they are."""
        for call in calls:
            for column in columns:
                parts = column.split(".")
                parent: Any = call
                for part in parts[:-1]:
                    parent = parent.get(part) if isinstance(parent, dict) else None
                ref = parent.get(parts[-1]) if isinstance(parent, dict) else None
                if not _is_ref(ref):
                    continue
                try:
                    target = _parse_ref(ref)
                except BadRequest:
                    continue
                if target[0].split("/")[0] in caller.entities:
                    value = await self._resolve(*target)
                    if value is not None:
                        parent[parts[-1]] = value

    async def delete_object(
        self, project_id: str, object_id: str, digests: Sequence[str] | None
    ) -> list[dict[str, Any]]:
        deleted = await self.objects.delete(project_id, object_id, digests)
        referenced: set[str] = set()
        for obj in deleted:
            stored = await self.objects.read(project_id, object_id, obj["digest"])
            referenced |= file_digests(stored["val"] if stored else None)
        await purge_unreferenced(self.engine, self.files, project_id, referenced)
        return deleted

    # --- feedback --------------------------------------------------------------------

    async def add_feedback(
        self, caller: Principal, items: Sequence[FeedbackCreate]
    ) -> list[dict[str, Any]]:
        for item in items:
            _check_feedback_target(caller, item)
        await self._projects(caller, (i.project_id for i in items))
        return await self.feedback.create(
            [i.model_dump(exclude_none=True) for i in items], wb_user_id=caller.user_id
        )

    async def replace_feedback(
        self, caller: Principal, req: FeedbackReplaceReq
    ) -> dict[str, Any] | None:
        _check_feedback_target(caller, req)
        item = req.model_dump(exclude_none=True, exclude={"feedback_id"})
        return await self.feedback.replace(
            req.project_id, req.feedback_id, item, wb_user_id=caller.user_id
        )

    async def query_feedback(
        self, caller: Principal, req: FeedbackQueryReq
    ) -> list[dict[str, Any]]:
        authorize(caller, req.project_id)
        return await self.feedback.query(
            req.project_id,
            query=req.query,
            sort_by=[s.model_dump() for s in req.sort_by or []],
            limit=req.limit,
            offset=req.offset,
            fields=req.fields,
        )

    async def purge_feedback(
        self, caller: Principal, project_id: str, query: Mapping[str, Any]
    ) -> int:
        authorize(caller, project_id, generate=True)
        return await self.feedback.purge(project_id, query)

    # --- refs ------------------------------------------------------------------------

    async def read_refs(self, caller: Principal, refs: Sequence[str]) -> list[Any]:
        """Each ref's value, or None where nothing is stored. A ref into a project the
        caller may not use is a 403 for the whole request."""
        parsed = [_parse_ref(ref) for ref in refs]
        for project_id, *_ in parsed:
            authorize(caller, project_id)
        return [await self._resolve(*p) for p in parsed]

    async def _resolve(
        self, project_id: str, kind: str, name: str, version: str, extra: list[str]
    ) -> Any:
        if kind in ("object", "op"):
            obj = await self.objects.read(project_id, name, version)
            if obj is None or obj["deleted_at"] is not None:
                return None
            value: Any = obj["val"]
        elif kind == "table":
            value = REF_PREFIX + f"{project_id}/table/{name}"
        else:
            return None
        for hop in range(0, len(extra), 2):
            edge, key = extra[hop], unquote(extra[hop + 1])
            value = await self._deref(project_id, value)
            if edge in ("key", "attr") and isinstance(value, dict):
                value = value.get(key)
            elif edge == "index" and isinstance(value, list) and key.lstrip("-").isdigit():
                index = int(key)
                value = value[index] if -len(value) <= index < len(value) else None
            elif edge == "id" and isinstance(value, str) and _is_ref(value):
                # Only a table of the ref's own project: a stored value naming another
                # project's table must not read through to it.
                table = _parse_ref(value)
                same = table[1] == "table" and table[0] == project_id
                value = await self.tables.row(project_id, key) if same else None
            else:
                return None
        return value

    async def _deref(self, project_id: str, value: Any) -> Any:
        """Follow refs to objects (not tables: rows are reached through `id` edges)."""
        for _ in range(MAX_REF_HOPS):
            if not (isinstance(value, str) and _is_ref(value)):
                return value
            target = _parse_ref(value)
            if target[1] not in ("object", "op") or target[0] != project_id:
                return value
            value = await self._resolve(*target)
        return value


def _check_feedback_target(caller: Principal, item: FeedbackCreate) -> None:
    """Feedback belongs to the project it is about: its ref must point inside it."""
    authorize(caller, item.project_id, generate=True)
    if not item.weave_ref.startswith(f"{REF_PREFIX}{item.project_id}/"):
        raise BadRequest(f"weave_ref {item.weave_ref!r} is not in project {item.project_id!r}")


def _all_in(project_id: str, item_projects: Iterable[str]) -> None:
    for item in item_projects:
        if item != project_id:
            raise BadRequest(f"item for project {item!r} sent to project {project_id!r}")


def _is_ref(value: Any) -> bool:
    return isinstance(value, str) and value.startswith(REF_PREFIX)


def _parse_ref(ref: str) -> tuple[str, str, str, str, list[str]]:
    """`weave:///entity/project/kind/name:version/edge/key...` → its parts."""
    if not _is_ref(ref):
        raise BadRequest(f"not a weave ref: {ref!r}")
    parts = ref[len(REF_PREFIX) :].split("/")
    if len(parts) < 4 or len(parts) % 2:
        raise BadRequest(f"malformed weave ref: {ref!r}")
    entity, project, kind, name_version, *extra = parts
    project_id = f"{entity}/{project}"
    try:
        split_project_id(project_id)
    except ValueError as exc:
        raise BadRequest(f"malformed weave ref {ref!r}: {exc}") from exc
    name, _, version = unquote(name_version).rpartition(":")
    if kind == "table" or kind == "call":
        name, version = unquote(name_version), ""
    elif not name:
        raise BadRequest(f"weave ref {ref!r} has no version (name:digest)")
    return project_id, kind, name, version, extra
