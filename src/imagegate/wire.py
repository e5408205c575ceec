"""Wire models of the trace-server endpoints beyond /image/create and the call reads:
calls written by clients, objects, tables, refs and feedback. Shapes and names follow
Weave 0.54's own (`weave/vendor/weave_server_sdk/types/`); fields imagegate does not
keep are accepted and dropped (pydantic's default, `extra="ignore"`)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from imagegate.schemas import ProjectScoped, RowCount, SortBy

Id = Field(min_length=1, max_length=36)  # call and trace ids are UUID strings


# --- calls -----------------------------------------------------------------------------


class CallStart(ProjectScoped):
    id: str | None = Field(default=None, min_length=1, max_length=36)
    op_name: str = Field(min_length=1, max_length=256)
    display_name: str | None = Field(default=None, max_length=256)
    trace_id: str | None = Field(default=None, min_length=1, max_length=36)
    parent_id: str | None = Field(default=None, max_length=36)
    started_at: datetime
    attributes: dict[str, Any] = Field(default_factory=dict)
    inputs: dict[str, Any] = Field(default_factory=dict)
    thread_id: str | None = Field(default=None, max_length=128)
    turn_id: str | None = Field(default=None, max_length=128)
    wb_run_id: str | None = Field(default=None, max_length=256)


class CallEnd(ProjectScoped):
    id: str = Id
    ended_at: datetime
    output: Any = None
    summary: dict[str, Any] = Field(default_factory=dict)
    exception: str | None = None


class CallComplete(CallStart):
    """A finished call, sent whole (`calls/complete`)."""

    id: str = Id  # type: ignore[assignment]
    trace_id: str = Id  # type: ignore[assignment]
    ended_at: datetime
    output: Any = None
    summary: dict[str, Any] = Field(default_factory=dict)
    exception: str | None = None


class CallStartReq(BaseModel):
    start: CallStart


class CallStartRes(BaseModel):
    id: str
    trace_id: str


class CallEndReq(BaseModel):
    end: CallEnd


class CallsCompleteReq(BaseModel):
    batch: list[CallComplete]


class UpsertStart(BaseModel):
    mode: Literal["start"]
    req: CallStartReq


class UpsertEnd(BaseModel):
    mode: Literal["end"]
    req: CallEndReq


class CallUpsertBatchReq(BaseModel):
    batch: list[UpsertStart | UpsertEnd]


class CallUpdateReq(ProjectScoped):
    call_id: str = Id
    display_name: str | None = Field(default=None, max_length=256)


class CallsDeleteReq(ProjectScoped):
    call_ids: list[str] = Field(max_length=10_000)


class CallsDeleteRes(BaseModel):
    num_deleted: int


# --- objects ---------------------------------------------------------------------------

ObjectName = Field(min_length=1, max_length=256)


class ObjCreate(ProjectScoped):
    object_id: str = ObjectName
    val: Any
    builtin_object_class: str | None = None
    expected_digest: str | None = None


class ObjCreateReq(BaseModel):
    obj: ObjCreate


class ObjCreateRes(BaseModel):
    digest: str
    object_id: str | None = None


class ObjReadReq(ProjectScoped):
    object_id: str = ObjectName
    digest: str = Field(min_length=1, max_length=64)
    metadata_only: bool | None = False


class ObjectsFilter(BaseModel):
    object_ids: list[str] | None = None
    is_op: bool | None = None
    latest_only: bool | None = None
    base_object_classes: list[str] | None = None
    exclude_base_object_classes: list[str] | None = None
    leaf_object_classes: list[str] | None = None


class ObjQueryReq(ProjectScoped):
    filter: ObjectsFilter | None = None
    limit: RowCount | None = None
    offset: RowCount | None = None
    sort_by: list[SortBy] | None = None
    metadata_only: bool | None = False


class ObjDeleteReq(ProjectScoped):
    object_id: str = ObjectName
    digests: list[str] | None = None


# --- tables ----------------------------------------------------------------------------


class TableCreate(ProjectScoped):
    rows: list[dict[str, Any]]
    expected_digest: str | None = None


class TableCreateReq(BaseModel):
    table: TableCreate


class TableCreateRes(BaseModel):
    digest: str
    row_digests: list[str]


class AppendSpec(BaseModel):
    row: dict[str, Any]


class PopSpec(BaseModel):
    index: int


class InsertSpec(BaseModel):
    index: int
    row: dict[str, Any]


class TableUpdate(BaseModel):
    append: AppendSpec | None = None
    pop: PopSpec | None = None
    insert: InsertSpec | None = None


class TableUpdateReq(ProjectScoped):
    base_digest: str = Field(min_length=1, max_length=64)
    updates: list[TableUpdate]


class TableUpdateRes(BaseModel):
    digest: str
    updated_row_digests: list[str]


class TableRowFilter(BaseModel):
    row_digests: list[str] | None = None


class TableQueryReq(ProjectScoped):
    digest: str = Field(min_length=1, max_length=64)
    filter: TableRowFilter | None = None
    limit: RowCount | None = None
    offset: RowCount | None = None
    sort_by: list[SortBy] | None = None


class TableQueryStatsReq(ProjectScoped):
    digest: str = Field(min_length=1, max_length=64)


class RefsReadBatchReq(BaseModel):
    refs: list[str] = Field(max_length=1000)


# --- feedback --------------------------------------------------------------------------


class FeedbackCreate(ProjectScoped):
    """One piece of feedback; the scorer/span fields Weave sends are kept as they come."""

    model_config = ConfigDict(extra="allow")

    id: str | None = Field(default=None, min_length=1, max_length=64)
    weave_ref: str = Field(min_length=1, max_length=1024)
    feedback_type: str = Field(min_length=1, max_length=256)
    payload: dict[str, Any] = Field(default_factory=dict)
    creator: str | None = Field(default=None, max_length=256)
    annotation_ref: str | None = Field(default=None, max_length=1024)
    runnable_ref: str | None = Field(default=None, max_length=1024)
    call_ref: str | None = Field(default=None, max_length=1024)
    trigger_ref: str | None = Field(default=None, max_length=1024)
    queue_id: str | None = Field(default=None, max_length=64)
    wb_user_id: str | None = None  # ignored: the server sets the caller's own


class FeedbackBatchCreateReq(BaseModel):
    batch: list[FeedbackCreate] = Field(max_length=10_000)


class FeedbackReplaceReq(FeedbackCreate):
    feedback_id: str = Field(min_length=1, max_length=64)


class FeedbackQueryReq(ProjectScoped):
    fields: list[str] | None = None
    query: dict[str, Any] | None = None
    sort_by: list[SortBy] | None = None
    limit: RowCount | None = None
    offset: RowCount | None = None


class FeedbackPurgeReq(ProjectScoped):
    query: dict[str, Any]
