"""A generation's attempts on its detail page, as the service records them: real
retries against the fake OpenAI server, not a hand-written summary."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import httpx
import pytest

from imagegate.config import Settings
from tests.conftest import Users, basic
from tests.fake_openai import FakeOpenAI, Reply, error_body
from tests.web.conftest import Client


@pytest.fixture
def settings(
    settings: Settings, tmp_path: Path, fake: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> Settings:
    fake.reset()
    monkeypatch.setenv("OPENAI_API_KEY", "sk-web-0123456789abcdef")
    models = tmp_path / "models.toml"
    models.write_text(
        f"""
[models."test/remote"]
provider = "openai"
upstream_model = "remote"
base_url = "{fake.url}/v1"
params = ["size"]
sizes = ["1024x1024"]
retry_base_s = 0.01
"""
    )
    return replace(settings, models_file=models)


async def test_detail_shows_each_attempt_the_service_recorded(
    client: httpx.AsyncClient, browser_for: Client, users: Users, fake: FakeOpenAI
) -> None:
    fake.push(
        Reply(502, body=b"<html>bad gateway</html>", content_type="text/html"),
        Reply(
            429, json=error_body("slow <down>", "rate_limit_exceeded"), headers={"Retry-After": "1"}
        ),
        Reply(503, json=error_body("the upstream said <no>")),
    )
    res = await client.post(
        "/image/create",
        json={"project_id": "alice/demo", "inputs": {"model": "test/remote", "prompt": "x"}},
        headers=basic(users.alice),
    )
    body = res.json()
    call_id = body["weave_call_id"]
    read = await client.post(
        "/call/read", json={"project_id": "alice/demo", "id": call_id}, headers=basic(users.alice)
    )
    attempts = read.json()["call"]["summary"]["attempts"]
    assert [a["status_code"] for a in attempts] == [502, 429, 503], attempts

    alice = await browser_for(users.alice)
    html = (await alice.get(f"/ui/p/alice/demo/calls/{call_id}")).text
    assert "This generation failed" in html and "(HTTP 503)" in html
    assert "the upstream said &lt;no&gt;" in html
    # One column per field the service records, one row per attempt, with its values.
    for field in {key for attempt in attempts for key in attempt} - {"attempt"}:
        assert f"<th>{field.replace('_', ' ')}</th>" in html, field
    assert "<th>retry after s</th>" in html
    for attempt in attempts:
        assert f"<td>{attempt['status_code']}</td>" in html
        assert f"<td>{attempt['latency_ms']}</td>" in html
    assert ">rate_limit<" in html and ">provider_error<" in html
    assert f"<td>{attempts[1]['retry_after_s']}</td>" in html  # waited as the 429 said
