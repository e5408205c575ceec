"""Wire models of the Weave trace-server API, named as in its OpenAPI document."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, field_validator

from imagegate.names import split_project_id


class ProjectScoped(BaseModel):
    project_id: str = Field(title="Project Id")

    @field_validator("project_id")
    @classmethod
    def check_project_id(cls, value: str) -> str:
        split_project_id(value)
        return value


class SvgReasoning(BaseModel):
    model_config = ConfigDict(extra="forbid")

    effort: Literal["none", "minimal", "low", "medium", "high", "xhigh", "max"] | None = None


class SvgOptions(BaseModel):
    """OpenAI's `svg` object: which model authors the SVG, and its reasoning effort."""

    model_config = ConfigDict(extra="forbid")

    model: str | None = Field(default=None, max_length=256)
    reasoning: SvgReasoning | None = None


class ImageGenerationRequestInputs(BaseModel):
    # Unknown fields are dropped, never echoed into the stored call or the response.
    model_config = ConfigDict(extra="ignore", title="ImageGenerationRequestInputs")

    model: str = Field(title="Model")
    prompt: str = Field(title="Prompt")
    n: StrictInt | None = Field(default=None, title="N")
    size: str | None = Field(default=None, description="WIDTHxHEIGHT, or 'auto'")
    seed: Annotated[int, Field(ge=0, le=2**63 - 1)] | None = Field(
        default=None, description="Seed for models that take one; drawn and recorded if omitted"
    )
    response_format: Literal["b64_json", "url"] | None = Field(
        default=None, description="How images come back: base64 (default) or an imagegate URL"
    )
    quality: str | None = Field(default=None, description="Per model: low/medium/high/auto, ...")
    style: str | None = Field(default=None, description="vivid or natural (dall-e-3)")
    background: str | None = Field(default=None, description="transparent, opaque or auto")
    output_format: str | None = Field(default=None, description="png, jpeg or webp")
    output_compression: StrictInt | None = Field(
        default=None, description="0-100, for jpeg and webp"
    )
    moderation: str | None = Field(default=None, description="low or auto")
    complexity: str | None = Field(
        default=None, description="low, medium or high: planning effort, apart from quality"
    )
    frame_count: StrictInt | None = Field(default=None, description="GIF output: 2-16 frames")
    frame_duration_ms: StrictInt | None = Field(
        default=None, description="GIF output: delay per frame in ms (default 200)"
    )
    svg: SvgOptions | None = Field(default=None, description="SVG output: the author model")
    input_fidelity: str | None = Field(default=None, description="Edits: high or low")
    safety_identifier: str | None = Field(
        default=None, max_length=256, description="Stable end-user id (wins over user)"
    )
    user: str | None = Field(default=None, max_length=256, description="End-user id (deprecated)")
    stream: bool | None = Field(
        default=None, description="Not supported here (use POST /v1/images/generations)"
    )
    partial_images: StrictInt | None = Field(
        default=None, description="Streaming only (POST /v1/images/generations)"
    )


class ImageGenerationCreateReq(ProjectScoped):
    model_config = ConfigDict(title="ImageGenerationCreateReq")

    inputs: ImageGenerationRequestInputs
    wb_user_id: str | None = Field(
        default=None,
        title="Wb User Id",
        description="Do not set directly. Server will automatically populate this field.",
    )
    track_llm_call: bool | None = Field(
        default=True,
        title="Track Llm Call",
        description="Whether to track this image generation call in the trace server",
    )


class ImageGenerationCreateRes(BaseModel):
    model_config = ConfigDict(title="ImageGenerationCreateRes")

    response: dict[str, Any] = Field(title="Response")
    weave_call_id: str | None = Field(default=None, title="Weave Call Id")


class CallReadReq(ProjectScoped):
    id: str
    include_costs: bool | None = False
    include_feedback: bool | None = False
    include_storage_size: bool | None = False
    include_total_storage_size: bool | None = False


class CallReadRes(BaseModel):
    call: dict[str, Any] | None


# A count of rows: anything larger than a 64-bit SQL integer (less one, for the `limit + 1`
# that tells whether more rows exist) is refused with a 422, not sent to the database.
RowCount = Annotated[int, Field(ge=0, le=2**63 - 2)]


class SortBy(BaseModel):
    field: str
    direction: Literal["asc", "desc"] = "asc"


class CallsFilter(BaseModel):
    model_config = ConfigDict(extra="ignore")

    op_names: list[str] | None = None
    call_ids: list[str] | None = None
    trace_ids: list[str] | None = None
    parent_ids: list[str] | None = None
    wb_user_ids: list[str] | None = None
    thread_ids: list[str] | None = None
    turn_ids: list[str] | None = None
    wb_run_ids: list[str] | None = None
    input_refs: list[str] | None = None
    output_refs: list[str] | None = None
    trace_roots_only: bool | None = None


class CallsQueryReq(ProjectScoped):
    model_config = ConfigDict(extra="ignore")

    filter: CallsFilter | None = None
    limit: RowCount | None = None
    offset: RowCount | None = None
    sort_by: list[SortBy] | None = None
    query: dict[str, Any] | None = None
    include_costs: bool | None = False
    include_feedback: bool | None = False
    columns: list[str] | None = None
    expand_columns: list[str] | None = Field(default=None, max_length=100)
    return_expanded_column_values: bool | None = True


class CallsQueryStatsReq(ProjectScoped):
    model_config = ConfigDict(extra="ignore")

    filter: CallsFilter | None = None
    query: dict[str, Any] | None = None
    limit: RowCount | None = None


class CallsQueryStatsRes(BaseModel):
    count: int
    has_more: bool = False
    total_storage_size_bytes: int | None = None


class FileContentReadReq(ProjectScoped):
    digest: str = Field(pattern=r"^[A-Za-z0-9_-]{43}$")


class FileCreateRes(BaseModel):
    digest: str


class ServerInfoRes(BaseModel):
    min_required_weave_python_version: str
    trace_server_version: str


class HealthRes(BaseModel):
    status: Literal["ok"] = "ok"
