"""The real Weave client (from PyPI), unchanged, against a real imagegate process."""

from __future__ import annotations

# A plain import: a broken Weave install fails this module instead of skipping it.
from weave.trace_server_bindings import remote_http_trace_server as remote

from imagegate.digest import weave_digest
from tests.conftest import LiveServer


def test_weave_client_round_trip(live_server: LiveServer) -> None:
    server = remote.RemoteHTTPTraceServer(live_server.url, password=live_server.admin_key)

    info = server.server_info()
    assert info.trace_server_version

    created = server.image_create(
        {
            "project_id": "admin/weave",
            "inputs": {"model": "local/procedural", "prompt": "an orange sunset", "n": 2},
        }
    )
    call_id = created.weave_call_id
    assert call_id
    data = created.response["data"]
    assert len(data) == 2

    read = server.call_read({"project_id": "admin/weave", "id": call_id})
    call = read.call
    assert call is not None and call.id == call_id
    assert call.op_name == "weave.image_generation_create"
    assert call.inputs["prompt"] == "an orange sunset"
    assert call.started_at.tzinfo is not None and call.ended_at is not None

    streamed = list(
        server.calls_query_stream(
            {"project_id": "admin/weave", "filter": {"call_ids": [call_id]}, "limit": 10}
        )
    )
    assert [c.id for c in streamed] == [call_id]

    ref = call.output["data"][0]["b64_json"]  # where Weave puts the Content
    content = server.file_content_read(
        {"project_id": "admin/weave", "digest": ref["files"]["content"]}
    )
    assert weave_digest(content.content) == ref["files"]["content"]
    assert content.content.startswith(b"\x89PNG")
    assert data[0]["b64_json"] == ref
    assert call.summary["weave"]["trace_name"] == "weave.image_generation_create"

    # weave's own deserialiser opens the stored output: each image becomes a Content.
    from weave.trace.serialization.serialize import from_json
    from weave.type_wrappers.Content.content import Content

    opened = from_json(call.output, "admin/weave", server)
    assert opened["model"] == "local/procedural"
    for index, item in enumerate(opened["data"]):
        image = item["b64_json"]
        assert isinstance(image, Content)
        assert image.mimetype == "image/png" and image.data.startswith(b"\x89PNG")
        assert weave_digest(image.data) == data[index]["content"]["digest"]
        assert image.metadata == {"source_index": index, "_original_schema": "b64_json"}
