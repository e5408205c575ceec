"""Finding 6: bad input is a clear 4xx, never a 500 — the reviewed cases, and fuzzing of
each class against a real server (hypothesis)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import LiveServer

DIGEST = "A" * 43
NUMBER_QUERY = (
    '{"project_id": "admin/fuzz", '
    '"query": {"$expr": {"$gt": [{"$getField": "inputs.n"}, {"$literal": %s}]}}}'
)
FUZZ = settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
SURROGATES = st.sampled_from(["\ud800", "\udfff", "a\udbffb", "\ud83d"])
ANY_TEXT = st.text(st.characters(codec=None, exclude_categories=()), max_size=12) | SURROGATES


@pytest.fixture(scope="module")
def http(live_server: LiveServer) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=live_server.url, auth=("api", live_server.admin_key), timeout=30
    ) as client:
        yield client


def post(http: httpx.Client, path: str, body: Any) -> httpx.Response:
    # ensure_ascii: a lone surrogate goes out as the JSON escape "\ud800", as an attacker
    # would send it (it has no UTF-8 form).
    return http.post(path, content=json.dumps(body), headers={"content-type": "application/json"})


def query(http: httpx.Client, expr: Any, **extra: Any) -> httpx.Response:
    body = {"project_id": "admin/fuzz", "query": {"$expr": expr}, **extra}
    return post(http, "/calls/stream_query", body)


def eq(path: str, value: Any) -> dict[str, Any]:
    return {"$eq": [{"$getField": path}, {"$literal": value}]}


def client_error(res: httpx.Response) -> None:
    assert 400 <= res.status_code < 500, (res.status_code, res.text[:300])
    assert res.json()["detail"]


# --- the reviewed cases -------------------------------------------------------------


def test_non_ascii_signature_is_401(live_server: LiveServer) -> None:
    res = httpx.get(f"{live_server.url}/files/admin/fuzz/{DIGEST}.png", params={"sig": "é"})
    assert res.status_code == 401, res.text


@pytest.mark.parametrize("path", ["inputs.²", "inputs.data.٣", "inputs." + "9" * 5000])
def test_odd_field_paths_are_not_500(http: httpx.Client, path: str) -> None:
    res = query(http, eq(path, "x"))
    assert res.status_code in (200, 400), res.text[:300]
    res = post(
        http,
        "/calls/stream_query",
        {"project_id": "admin/fuzz", "sort_by": [{"field": path, "direction": "asc"}]},
    )
    assert res.status_code in (200, 400), res.text[:300]


def test_5000_digit_index_is_400(http: httpx.Client) -> None:
    client_error(query(http, eq("inputs." + "9" * 5000, "x")))


def test_huge_integer_literal_is_400(http: httpx.Client) -> None:
    body = NUMBER_QUERY % ("1" + "0" * 400)
    res = http.post("/calls/stream_query", content=body)
    client_error(res)
    res = http.post("/calls/query_stats", content=body)
    client_error(res)


@pytest.mark.parametrize("stamp", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"])
def test_edge_timestamps_are_4xx(http: httpx.Client, stamp: str) -> None:
    client_error(query(http, {"$gt": [{"$getField": "started_at"}, {"$literal": stamp}]}))
    client_error(http.get("/projects/admin/fuzz/spend", params={"since": stamp}))
    client_error(http.get("/projects/admin/fuzz/spend", params={"until": stamp}))


def sign_in(live_server: LiveServer) -> httpx.Client:
    browser = httpx.Client(base_url=live_server.url, timeout=30)
    page = browser.get("/ui/signin")
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert token
    res = browser.post(
        "/ui/signin", data={"csrf_token": token[1], "api_key": live_server.admin_key}
    )
    assert res.status_code == 303, res.text
    return browser


@pytest.mark.parametrize(
    "params", [{"to": "9999-12-31"}, {"from": "0001-01-01", "tz": "960"}, {"from": "9999-12-31"}]
)
def test_gallery_edge_dates_are_400(live_server: LiveServer, params: dict[str, str]) -> None:
    res = _browser(live_server).get("/ui/p/admin/fuzz", params=params)
    assert res.status_code in (200, 400), res.status_code
    if "9999" in params.get("to", "") or params.get("tz"):
        assert res.status_code == 400


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/image/create", {"project_id": "admin/\ud800", "inputs": {"model": "m", "prompt": "p"}}),
        (
            "/image/create",
            {"project_id": "admin/fuzz", "inputs": {"model": "\ud800", "prompt": "p"}},
        ),
        (
            "/image/create",
            {
                "project_id": "admin/fuzz",
                "inputs": {"model": "local/procedural", "prompt": "p", "user": "\udfff"},
            },
        ),
        (
            "/calls/stream_query",
            {"project_id": "admin/fuzz", "query": {"$expr": eq("id", "\ud800")}},
        ),
        (
            "/calls/query_stats",
            {"project_id": "admin/fuzz", "query": {"$expr": eq("id", "\ud800")}},
        ),
        ("/call/read", {"project_id": "admin/fuzz", "id": "\ud800"}),
        ("/file/content", {"project_id": "admin/fuzz", "digest": "\ud800" * 43}),
    ],
)
def test_lone_surrogates_are_4xx(http: httpx.Client, path: str, body: dict[str, Any]) -> None:
    client_error(post(http, path, body))


# --- fuzzing each class ---------------------------------------------------------------


@FUZZ
@given(text=ANY_TEXT, where=st.sampled_from(["project", "model", "user", "id", "literal"]))
def test_fuzz_text_fields(http: httpx.Client, text: str, where: str) -> None:
    inputs = {"model": "local/procedural", "prompt": "p", "size": "256x256"}
    if where == "project":
        res = post(http, "/call/read", {"project_id": f"admin/{text}", "id": "x"})
    elif where == "model":
        res = post(
            http, "/image/create", {"project_id": "admin/fuzz", "inputs": {**inputs, "model": text}}
        )
    elif where == "user":
        body = {
            "project_id": "admin/fuzz",
            "inputs": {**inputs, "user": text},
            "track_llm_call": False,
        }
        res = post(http, "/image/create", body)
    elif where == "id":
        res = post(http, "/call/read", {"project_id": "admin/fuzz", "id": text})
    else:
        res = query(http, eq("inputs.model", text))
    assert res.status_code < 500, res.text[:300]


@FUZZ
@given(
    part=st.text(st.characters(categories=["Nd", "No", "Nl"]), min_size=1, max_size=6)
    | st.text("0123456789", min_size=1, max_size=6000),
    in_sort=st.booleans(),
)
def test_fuzz_field_paths(http: httpx.Client, part: str, in_sort: bool) -> None:
    path = f"inputs.{part}"
    if in_sort:
        body = {"project_id": "admin/fuzz", "sort_by": [{"field": path}]}
        res = post(http, "/calls/stream_query", body)
    else:
        res = query(http, eq(path, 1))
    assert res.status_code < 500, res.text[:300]


@FUZZ
@given(number=st.integers(min_value=-(10**4000), max_value=10**4000) | st.floats())
def test_fuzz_number_literals(http: httpx.Client, number: Any) -> None:
    text = json.dumps(number) if isinstance(number, float) else str(number)
    res = http.post("/calls/stream_query", content=NUMBER_QUERY % text)
    assert res.status_code < 500, res.text[:300]


@FUZZ
@given(
    day=st.datetimes(timezones=st.timezones()) | st.datetimes(),
    field=st.sampled_from(["since", "until", "query"]),
)
def test_fuzz_timestamps(http: httpx.Client, day: Any, field: str) -> None:
    stamp = day.isoformat()
    if field == "query":
        res = query(http, {"$gte": [{"$getField": "started_at"}, {"$literal": stamp}]})
    else:
        res = http.get("/projects/admin/fuzz/spend", params={field: stamp})
    assert res.status_code < 500, res.text[:300]


@FUZZ
@given(
    day=st.dates().map(str) | st.text(max_size=10),
    tz=st.integers(min_value=-960, max_value=960),
    which=st.sampled_from(["from", "to"]),
)
def test_fuzz_gallery_dates(live_server: LiveServer, day: str, tz: int, which: str) -> None:
    browser = _browser(live_server)
    res = browser.get("/ui/p/admin/fuzz", params={which: day, "tz": str(tz)})
    assert res.status_code in (200, 400), res.status_code


_BROWSERS: dict[str, httpx.Client] = {}


def _browser(live_server: LiveServer) -> httpx.Client:
    if live_server.url not in _BROWSERS:
        _BROWSERS[live_server.url] = sign_in(live_server)
    return _BROWSERS[live_server.url]
