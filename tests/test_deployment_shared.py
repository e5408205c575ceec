"""The deployment surface shared between processes, through real `imagegate serve`s:
S3 endpoints and the plain-http rule, a signed URL made by one replica and served by
another, a provider key set with the CLI and used by a server sharing the secret, and
spend over a period, for whom."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from imagegate.config import Settings
from imagegate.digest import weave_digest
from tests.backends import S3Server, stored_files
from tests.conftest import Backend, start_server, stop_server
from tests.deploy import KEY, PROJECT, cli, create, models_toml, new_key
from tests.fake_openai import FakeOpenAI, refused_url

# --- S3 endpoints ------------------------------------------------------------------


def s3_cases(s3: S3Server) -> dict[str, tuple[dict[str, str], bool]]:
    moto, nowhere = s3.endpoint, refused_url()
    # 0.0.0.0 reaches this machine, but is not a loopback address by the rule.
    not_loopback = s3.endpoint.replace("127.0.0.1", "0.0.0.0")
    return {
        "imagegate_endpoint_wins": (
            {"IMAGEGATE_S3_ENDPOINT": moto, "AWS_ENDPOINT_URL_S3": nowhere,
             "AWS_ENDPOINT_URL": nowhere}, True),
        "aws_s3_endpoint_over_aws_endpoint": (
            {"AWS_ENDPOINT_URL_S3": moto, "AWS_ENDPOINT_URL": nowhere}, True),
        "plain_http_off_loopback_refused": (
            {"IMAGEGATE_S3_ENDPOINT": not_loopback, "AWS_ENDPOINT_URL": nowhere}, False),
        "plain_http_off_loopback_when_allowed": (
            {"IMAGEGATE_S3_ENDPOINT": not_loopback, "AWS_ENDPOINT_URL": nowhere,
             "IMAGEGATE_S3_ALLOW_HTTP": "1"}, True),
    }  # fmt: skip


@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
@pytest.mark.parametrize(
    "case",
    [
        "imagegate_endpoint_wins",
        "aws_s3_endpoint_over_aws_endpoint",
        "plain_http_off_loopback_refused",
        "plain_http_off_loopback_when_allowed",
    ],
)
async def test_s3_endpoint_precedence_and_plain_http(
    tmp_path: Path, backend: Backend, s3_server: S3Server, case: str
) -> None:
    env, works = s3_cases(s3_server)[case]
    server = start_server(tmp_path / "data", {**backend.env, **env})
    try:
        async with httpx.AsyncClient(
            base_url=server.url, auth=("api", server.admin_key), timeout=60
        ) as client:
            ready = await client.get("/ready")
            res = await create(client, model="local/procedural", size="256x256")
    finally:
        stop_server(server)
    response = res.json()["response"]
    if works:
        assert ready.status_code == 200, ready.text
        digest = response["data"][0]["content"]["digest"]
        stored = await stored_files(Settings(data_dir=tmp_path, files_url=backend.files_url))
        assert f"{PROJECT}/{digest[:2]}/{digest}" in stored
    else:
        assert ready.status_code == 503 and ready.json()["files"] == "unavailable", ready.text
        assert response["error_type"] == "storage_error", response
        assert await stored_files(Settings(data_dir=tmp_path, files_url=backend.files_url)) == {}


# --- replicas sharing a secret ---------------------------------------------------


@pytest.mark.parametrize("backend", ["postgres"], indirect=True)
async def test_a_signed_url_from_one_replica_is_served_by_another(
    tmp_path: Path, backend: Backend
) -> None:
    shared = {**backend.env, "IMAGEGATE_SECRET_KEY": "shared-by-replicas"}
    one = start_server(tmp_path / "one", shared)
    other = start_server(tmp_path / "other", shared)
    stranger = start_server(tmp_path / "stranger", {**shared, "IMAGEGATE_SECRET_KEY": "other"})
    try:
        key = one.admin_key
        async with httpx.AsyncClient(base_url=one.url, auth=("api", key), timeout=60) as client:
            res = await create(client, model="local/procedural", response_format="url")
        (item,) = res.json()["response"]["data"]
        path = item["content"]["url"]  # the signed link beside Weave's Content reference
        assert path.startswith("/files/")  # relative: no Host header decides a URL
        served = httpx.get(other.url + path)  # no key: the signature is the credential
        assert served.status_code == 200, served.text
        assert weave_digest(served.content) == item["content"]["digest"]
        # A server with another secret does not honour it.
        assert httpx.get(stranger.url + path).status_code == 401
    finally:
        for server in (one, other, stranger):
            stop_server(server)


# --- provider keys set with the CLI ------------------------------------------------


async def test_provider_key_set_with_the_cli_is_used_by_a_server_sharing_the_secret(
    tmp_path: Path, backend: Backend, fake: FakeOpenAI
) -> None:
    fake.reset()
    models = tmp_path / "models.toml"
    models.write_text(models_toml(fake))
    env = {
        **backend.env,
        "IMAGEGATE_DATA_DIR": str(tmp_path / "data"),
        "IMAGEGATE_MODELS": str(models),
        "IMAGEGATE_SECRET_KEY": "the-operators-secret",
        "OPENAI_API_KEY": "",  # no server-wide key: only the entity's
    }
    erin = new_key("erin", "studio", env)
    studio_key = "sk-studio-0123456789abcdef"
    made = cli("secrets", "set", "--entity", "studio", "OPENAI_API_KEY", env=env, stdin=studio_key)
    assert made.returncode == 0, made.stderr
    assert studio_key not in made.stdout + made.stderr

    server = start_server(None, env)
    try:
        async with httpx.AsyncClient(base_url=server.url, auth=("api", erin), timeout=60) as c:
            res = await create(c, project="studio/posters")
    finally:
        stop_server(server)
    assert "data" in res.json()["response"], res.text
    (sent,) = fake.requests
    assert sent.headers["authorization"] == f"Bearer {studio_key}"

    # The same database under another secret cannot decrypt it, and says so.
    server = start_server(None, {**env, "IMAGEGATE_SECRET_KEY": "a-different-secret"})
    try:
        async with httpx.AsyncClient(base_url=server.url, auth=("api", erin), timeout=60) as c:
            res = await create(c, project="studio/posters")
    finally:
        stop_server(server)
    response = res.json()["response"]
    assert response.get("error_type") == "auth", res.text
    assert "IMAGEGATE_SECRET_KEY differs" in response["error"], res.text
    assert len(fake.requests) == 1  # nothing was sent with a wrong key


# --- spend ---------------------------------------------------------------------------


async def test_spend_since_until_and_who_may_read_it(
    tmp_path: Path, backend: Backend, fake: FakeOpenAI
) -> None:
    fake.reset()
    models = tmp_path / "models.toml"
    models.write_text(models_toml(fake))
    env = {**backend.env, "IMAGEGATE_DATA_DIR": str(tmp_path / "data"),
           "IMAGEGATE_MODELS": str(models), "OPENAI_API_KEY": KEY}  # fmt: skip
    server = start_server(None, env)
    try:
        erin = new_key("erin", "studio", env)
        frank = new_key("frank", "elsewhere", env)
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as client:
            auth = ("api", erin)

            async def generated() -> dict[str, Any]:
                res = await client.post(
                    "/image/create",
                    json={"project_id": "studio/p", "inputs": {"model": "test/priced",
                                                               "prompt": "x"}},
                    auth=auth,
                )  # fmt: skip
                call_id = res.json()["weave_call_id"]
                read = await client.post(
                    "/call/read", json={"project_id": "studio/p", "id": call_id}, auth=auth
                )
                call: dict[str, Any] = read.json()["call"]
                return call

            early = await generated()
            await asyncio.sleep(0.3)
            late = await generated()
            between = (
                datetime.fromisoformat(early["ended_at"])
                + (
                    datetime.fromisoformat(late["started_at"])
                    - datetime.fromisoformat(early["ended_at"])
                )
                / 2
            )

            async def spend(who: str | None, **period: datetime) -> httpx.Response:
                params = {k: v.isoformat() for k, v in period.items()}
                return await client.get(
                    "/projects/studio/p/spend",
                    params=params,
                    auth=("api", who) if who else None,
                )

            whole = (await spend(erin)).json()
            assert whole["total_cost"] == pytest.approx(0.08), whole
            since = (await spend(erin, since=between)).json()
            until = (await spend(erin, until=between)).json()
            assert since["total_cost"] == until["total_cost"] == pytest.approx(0.04)
            assert since["by_model"]["test/priced"]["calls"] == 1
            assert until["by_model"]["test/priced"]["calls"] == 1
            start = datetime.fromisoformat(early["started_at"]) - timedelta(seconds=1)
            window = (await spend(erin, since=start, until=between)).json()
            assert window["total_cost"] == pytest.approx(0.04)
            after = (await spend(erin, since=datetime.fromisoformat(late["ended_at"])
                                 + timedelta(seconds=1))).json()  # fmt: skip
            assert after["total_cost"] == 0

            # Who may read it: the entity's members only.
            assert (await spend(None)).status_code == 401
            assert (await spend(frank)).status_code == 403
            assert (await spend(server.admin_key)).status_code == 403  # not in `studio`
            bad = await client.get(
                "/projects/studio/p/spend", params={"since": "yesterday"}, auth=auth
            )
            assert bad.status_code == 422
    finally:
        stop_server(server)
