"""Provider keys: from the environment or per entity (encrypted), and never leaked."""

from __future__ import annotations

import logging
import os
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest

from imagegate.config import Settings
from tests.conftest import IMAGEGATE_BIN, Users, basic
from tests.fake_openai import FakeOpenAI, Reply, error_body

TEAM_KEY = "sk-team-SUPERSECRET-0123456789abcdef"
ENV_KEY = "sk-env-ALSOSECRET-9876543210fedcba"


@pytest.fixture
def settings(
    settings: Settings, tmp_path: Path, fake: FakeOpenAI, monkeypatch: pytest.MonkeyPatch
) -> Settings:
    fake.reset()
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    models = tmp_path / "models.toml"
    models.write_text(f'[models."gpt-image-2"]\nbase_url = "{fake.url}/v1"\nmax_attempts = 1\n')
    return replace(settings, models_file=models)


async def generate(client, key: str, project: str = "alice/keys") -> dict:
    res = await client.post(
        "/image/create",
        json={"project_id": project, "inputs": {"model": "gpt-image-2", "prompt": "x"}},
        headers=basic(key),
    )
    assert res.status_code == 200, res.text
    return res.json()


async def test_no_key_anywhere_is_a_recorded_auth_error(client, users: Users, fake) -> None:
    body = await generate(client, users.alice)
    assert body["response"]["error_type"] == "auth"
    assert "OPENAI_API_KEY" in body["response"]["error"]
    assert fake.requests == []
    assert body["weave_call_id"]


async def test_entity_key_wins_over_environment(
    client, users: Users, fake, imagegate, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", ENV_KEY)
    await generate(client, users.alice)
    assert fake.requests[-1].headers["authorization"] == f"Bearer {ENV_KEY}"
    await imagegate.secrets.set("acme", "OPENAI_API_KEY", TEAM_KEY)
    await generate(client, users.alice, project="acme/keys")
    assert fake.requests[-1].headers["authorization"] == f"Bearer {TEAM_KEY}"
    await generate(client, users.alice, project="alice/keys")  # alice's own entity: env key
    assert fake.requests[-1].headers["authorization"] == f"Bearer {ENV_KEY}"


async def test_key_never_leaks_into_rows_responses_or_logs(
    client,
    users: Users,
    fake,
    imagegate,
    settings: Settings,
    raw_database,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    await imagegate.secrets.set("acme", "OPENAI_API_KEY", TEAM_KEY)
    fake.push(
        Reply(401, json=error_body(f"Incorrect API key provided: {TEAM_KEY}.", "invalid_api_key")),
        Reply(500, json=error_body(f"upstream failed for key {TEAM_KEY}", "server_error")),
    )
    seen = [await generate(client, users.alice, "acme/keys") for _ in range(2)]
    assert seen[0]["response"]["error_type"] == "auth"
    assert "Incorrect API key provided" in seen[0]["response"]["error"]
    assert fake.requests[0].headers["authorization"] == f"Bearer {TEAM_KEY}"  # it was used

    stream = await client.post(
        "/calls/stream_query", json={"project_id": "acme/keys"}, headers=basic(users.alice)
    )
    texts = [str(seen), stream.text, caplog.text]
    texts.append(raw_database().decode("latin-1"))  # SQLite files or a pg_dump
    texts += [p.read_bytes().decode("latin-1") for p in settings.data_dir.rglob("*") if p.is_file()]
    secret_core = "SUPERSECRET-0123456789abcdef"
    for text in texts:
        assert secret_core not in text
    assert len(stream.text.splitlines()) == 2


def cli(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(IMAGEGATE_BIN), *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "IMAGEGATE_SECRET_KEY": "test-server-secret"},
    )


def test_secrets_cli(tmp_path: Path) -> None:
    data = str(tmp_path / "data")
    assert (
        cli("keys", "create", "--user", "erin", "--entity", "studio", "--data-dir", data).returncode
        == 0
    )
    made = cli(
        "secrets",
        "set",
        "--entity",
        "studio",
        "OPENAI_API_KEY",
        "--data-dir",
        data,
        stdin=TEAM_KEY + "\n",
    )
    assert made.returncode == 0, made.stderr
    assert TEAM_KEY not in made.stdout + made.stderr
    listed = cli("secrets", "list", "--entity", "studio", "--data-dir", data)
    assert "OPENAI_API_KEY" in listed.stdout and TEAM_KEY not in listed.stdout
    raw = b"".join(p.read_bytes() for p in (tmp_path / "data").rglob("imagegate.db*"))
    assert TEAM_KEY.encode() not in raw  # encrypted at rest
    assert (
        cli(
            "secrets", "set", "--entity", "nobody", "OPENAI_API_KEY", "--data-dir", data, stdin="x"
        ).returncode
        != 0
    )
    assert (
        cli(
            "secrets", "set", "--entity", "studio", "bad name", "--data-dir", data, stdin="x"
        ).returncode
        != 0
    )
    assert (
        cli(
            "secrets", "set", "--entity", "studio", "OPENAI_API_KEY", "--data-dir", data, stdin=""
        ).returncode
        != 0
    )
    deleted = cli("secrets", "delete", "--entity", "studio", "OPENAI_API_KEY", "--data-dir", data)
    assert deleted.returncode == 0
    assert (
        "OPENAI_API_KEY"
        not in cli("secrets", "list", "--entity", "studio", "--data-dir", data).stdout
    )
