"""Every trace-server route the Weave client knows that imagegate does not serve.

Each answers at once with 501 and a `detail` the client shows, so a feature imagegate
lacks fails loudly: never a 404 the client would treat as "silently skip", never a
success that stored nothing. Built from the routes of the Weave 0.54 client
(`weave/vendor/weave_server_sdk/resources/`); routes imagegate serves are skipped.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.routing import Route

WEAVE_CLIENT_PATHS = (
    "/agents/agent-versions/query", "/agents/conversations/chat", "/agents/conversations/spans",
    "/agents/query", "/agents/search", "/agents/spans/custom-attrs/schema", "/agents/spans/query",
    "/agents/spans/stats", "/agents/traces/chat", "/aliases", "/annotation_queues",
    "/annotation_queues/query", "/annotation_queues/stats", "/annotation_queues/{queue_id}",
    "/annotation_queues/{queue_id}/items", "/annotation_queues/{queue_id}/items/query",
    "/annotation_queues/{queue_id}/items/{item_id}/progress", "/calls/score", "/calls/stats",
    "/calls/usage", "/completions/create", "/completions/create_stream", "/cost/create",
    "/cost/purge", "/cost/query", "/dataset_sources/link", "/dataset_sources/link_delete",
    "/dataset_sources/query", "/dataset_sources/source_datasets_query",
    "/evaluations/evaluate_model", "/evaluations/rescore", "/evaluations/status",
    "/feedback/aggregate", "/feedback/payload_schema", "/feedback/stats", "/files/query_stats",
    "/files/resolve_url", "/objs/{object_id}/aliases", "/objs/{object_id}/aliases/remove",
    "/objs/{object_id}/versions/{digest}/tags", "/objs/{object_id}/versions/{digest}/tags/remove",
    "/otel/v1/traces", "/project/ingest_sampling_settings/read",
    "/project/sensitive_data_settings", "/project/stats", "/project/ttl_settings/read",
    "/project/ttl_settings/update", "/service/projects_info", "/table/create_from_digests",
    "/table/query_stats_batch", "/tags", "/threads/stream_query", "/trace/usage",
    "/v2/{entity}/{project}/datasets", "/v2/{entity}/{project}/datasets/{object_id}",
    "/v2/{entity}/{project}/datasets/{object_id}/versions/{digest}",
    "/v2/{entity}/{project}/eval_results/query", "/v2/{entity}/{project}/evaluation_runs",
    "/v2/{entity}/{project}/evaluation_runs/{evaluation_run_id}",
    "/v2/{entity}/{project}/evaluation_runs/{evaluation_run_id}/finish",
    "/v2/{entity}/{project}/evaluations", "/v2/{entity}/{project}/evaluations/{object_id}",
    "/v2/{entity}/{project}/evaluations/{object_id}/versions/{digest}",
    "/v2/{entity}/{project}/models", "/v2/{entity}/{project}/models/{object_id}",
    "/v2/{entity}/{project}/models/{object_id}/versions/{digest}", "/v2/{entity}/{project}/ops",
    "/v2/{entity}/{project}/ops/{object_id}",
    "/v2/{entity}/{project}/ops/{object_id}/versions/{digest}",
    "/v2/{entity}/{project}/predictions", "/v2/{entity}/{project}/predictions/{prediction_id}",
    "/v2/{entity}/{project}/predictions/{prediction_id}/finish",
    "/v2/{entity}/{project}/runtimes/{runtime_name}", "/v2/{entity}/{project}/scorers",
    "/v2/{entity}/{project}/scorers/{object_id}",
    "/v2/{entity}/{project}/scorers/{object_id}/versions/{digest}",
    "/v2/{entity}/{project}/scores", "/v2/{entity}/{project}/scores/{score_id}",
)  # fmt: skip

METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE"]


async def not_implemented(request: Request) -> JSONResponse:
    return JSONResponse(
        {"detail": f"imagegate does not implement {request.method} {request.url.path}"},
        status_code=501,
        # Weave's generated client retries 5xx unless told not to: this will not change.
        headers={"X-Should-Retry": "false"},
    )


def install(app: FastAPI) -> None:
    """Answer 501 on the client's routes that no router serves. Call after the routers."""
    served = {route.path for route in app.routes if isinstance(route, Route)}
    for path in WEAVE_CLIENT_PATHS:
        if path not in served:
            app.add_api_route(
                path, not_implemented, methods=METHODS, include_in_schema=False, name=path
            )
