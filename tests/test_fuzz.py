"""Fuzzing every operation of imagegate's own OpenAPI document with schemathesis.

A real `imagegate serve` answers requests generated from /openapi.json, authenticated
as its admin. Two checks: no answer is a 5xx, and every answer whose status the
document declares matches the declared schema. Undeclared statuses (401, 403, 404 ...)
are not failures here: the document lists what FastAPI declares, not every error.
Half the requests are pointed at the admin's own project (and `local/procedural`), so
they get past authorisation and validation and reach the real work. Bounded by a number
of examples per operation; run once per backend.
"""

from __future__ import annotations

import itertools
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from imagegate.app import create_app
from imagegate.config import Settings
from tests.conftest import (
    Backend,
    LiveServer,
    Users,
    basic,
    start_server,
    stop_server,
)

EXAMPLES_PER_OPERATION = 150
PROJECT = ("admin", "fuzz")


@pytest.fixture(scope="module")
def fuzzed_server(
    tmp_path_factory: pytest.TempPathFactory, module_backend: Backend
) -> Iterator[LiveServer]:
    server = start_server(tmp_path_factory.mktemp("fuzz") / "data", module_backend.env)
    yield server
    stop_server(server)


def _openapi_document() -> dict[str, Any]:
    # Built in-process at collection (schemathesis parametrizes tests from it), and
    # checked below to be the very document the server serves.
    with tempfile.TemporaryDirectory() as tmp:
        return create_app(Settings(data_dir=Path(tmp))).openapi()


DOCUMENT = _openapi_document()
schema = schemathesis.openapi.from_dict(DOCUMENT)
_turn = itertools.count()


def _aim_at_own_project(case: schemathesis.Case) -> None:
    """Every other case names the caller's project instead of a random one."""
    if next(_turn) % 2:
        return
    if isinstance(case.body, dict) and "project_id" in case.body:
        case.body["project_id"] = "/".join(PROJECT)
        if isinstance(case.body.get("inputs"), dict):  # a model that exists: real generations
            case.body["inputs"]["model"] = "local/procedural"
    if case.path_parameters and "entity" in case.path_parameters:
        case.path_parameters["entity"], case.path_parameters["project"] = PROJECT


@schema.parametrize()
@settings(
    max_examples=EXAMPLES_PER_OPERATION,
    deadline=None,
    database=None,
    # CI replays the same examples every run (a red CI is then a real regression);
    # elsewhere every run explores new ones.
    derandomize=bool(os.environ.get("CI")),
    suppress_health_check=list(HealthCheck),
)
def test_no_server_errors_and_answers_match_the_schema(
    case: schemathesis.Case, fuzzed_server: LiveServer
) -> None:
    _aim_at_own_project(case)
    case.call_and_validate(
        base_url=fuzzed_server.url,
        headers=basic(fuzzed_server.admin_key),
        checks=[not_a_server_error, response_schema_conformance],
    )


def test_the_fuzzed_document_is_the_served_one(fuzzed_server: LiveServer) -> None:
    served = httpx.get(f"{fuzzed_server.url}/openapi.json", timeout=30).json()
    assert served == DOCUMENT
    operations = sum(len(methods) for methods in DOCUMENT["paths"].values())
    assert operations >= 13  # every operation is fuzzed, none filtered out


# What the fuzzing found, pinned. Each was a 500, or a 200 stream cut short.


async def test_a_row_count_past_64_bits_is_a_422(client: httpx.AsyncClient, users: Users) -> None:
    for path in ("/calls/stream_query", "/calls/query_stats"):
        body = {"project_id": "alice/fuzz", "limit": 2**64}
        res = await client.post(path, json=body, headers=basic(users.alice))
        assert res.status_code == 422, path


@pytest.mark.parametrize("prompt", ["a\x00b", "a\ud800b"])
async def test_prompts_no_database_can_store_are_a_422(
    client: httpx.AsyncClient, users: Users, prompt: str
) -> None:
    # A NUL or an unpaired surrogate: SQLite stores them, PostgreSQL cannot; both refuse.
    body = {"project_id": "alice/fuzz", "inputs": {"model": "local/procedural", "prompt": prompt}}
    res = await client.post("/image/create", content=json.dumps(body), headers=basic(users.alice))
    assert res.status_code == 422
    assert res.json()["detail"][0]["loc"] == ["body", "inputs", "prompt"]
    stored = await client.post(
        "/calls/query_stats", json={"project_id": "alice/fuzz"}, headers=basic(users.alice)
    )
    assert stored.json()["count"] == 0


@pytest.mark.parametrize(
    ("path", "fields"),
    [
        ("/call/read", {"id": "a\x00"}),
        ("/calls/stream_query", {"filter": {"call_ids": ["\x00"]}}),
        (
            "/calls/stream_query",
            {"query": {"$expr": {"$eq": [{"$getField": "inputs.prompt"}, {"$literal": "\x00"}]}}},
        ),
        ("/calls/query_stats", {"filter": {"op_names": ["\x00"]}}),
    ],
)
async def test_values_the_database_refuses_are_a_400(
    client: httpx.AsyncClient, users: Users, backend: Backend, path: str, fields: dict[str, Any]
) -> None:
    body = {"project_id": "alice/fuzz", **fields}
    res = await client.post(path, content=json.dumps(body), headers=basic(users.alice))
    if backend.name == "sqlite":
        assert res.status_code == 200  # SQLite compares a NUL like any character
    else:
        assert res.status_code == 400
        assert "cannot be stored or searched" in res.json()["detail"]
