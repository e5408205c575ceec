"""The settings registry, the one data location, and the CLI that both drive."""

from __future__ import annotations

import os
import pty
import re
import select
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from imagegate.config import SETTINGS, Settings, user_data_dir
from tests.conftest import IMAGEGATE_BIN, REPO, basic, start_server, stop_server

SRC = REPO / "src" / "imagegate"


def test_readme_lists_every_setting() -> None:
    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("## Settings") : readme.index("## Operations")]
    rows = {m[1]: m[0] for m in re.findall(r"^\| (.*?) \| `(IMAGEGATE_\w+)` \|", section, re.M)}
    for item in SETTINGS:
        assert item.env in rows, f"README's settings table lacks {item.env}"
        if not item.secret:
            assert f"`{item.flag}`" in rows[item.env], f"README lacks the flag {item.flag}"
    assert set(rows) == {item.env for item in SETTINGS}, "README lists settings that do not exist"


def test_no_module_but_config_reads_the_environment() -> None:
    readers = []
    for path in SRC.rglob("*.py"):
        text = path.read_text()
        if path.name == "config.py":
            continue
        for line in text.splitlines():
            if not re.search(r"os\.environ|getenv\(", line):
                continue
            # Writes are not reads: LiteLLM's own switch, set before it is imported, and
            # prometheus_client's directory of shared metrics (metrics.py).
            if re.search(r"os\.environ(\[[^\]]+\]\s*=[^=]|\.setdefault\(|\.pop\()", line):
                continue
            readers.append(f"{path.relative_to(SRC)}: {line.strip()}")
    assert readers == []


def test_from_env_reads_every_variable_and_says_what_is_wrong(tmp_path: Path) -> None:
    env = {
        "IMAGEGATE_DATA_DIR": str(tmp_path),
        "IMAGEGATE_MAX_REQUEST_BYTES": "1234",
        "IMAGEGATE_IDEMPOTENCY_WAIT": "2.5",
        "IMAGEGATE_BUDGET_ALLOW_UNPRICED": "yes",
        "IMAGEGATE_METRICS_TOKEN": "t",
    }
    settings = Settings.from_env(env, max_upload_bytes="99")
    assert settings.data_dir == tmp_path
    assert settings.max_request_bytes == 1234
    assert settings.idempotency_wait == 2.5
    assert settings.budget_allow_unpriced is True
    assert settings.metrics_token == "t"
    assert settings.max_upload_bytes == 99  # an override (a flag) wins
    with pytest.raises(ValueError, match="IMAGEGATE_RATE_LIMIT_KEY_REQUESTS: expected int"):
        Settings.from_env({"IMAGEGATE_RATE_LIMIT_KEY_REQUESTS": "lots"})


@pytest.mark.parametrize(
    ("flag", "value", "says"),
    [
        ("--database-url", "postgresql://u:s3cr3t@127.0.0.1/db", "postgresql+asyncpg://"),
        ("--database-url", "sqlite+aiosqlite:///:memory:", "names no file"),
        ("--database-url", "mysql://u:s3cr3t@127.0.0.1/db", "a 'mysql' URL"),
        ("--files-url", "ftp://127.0.0.1/images", "unsupported files URL"),
    ],
)
def test_a_store_url_no_backend_serves_is_a_usage_error(
    tmp_path: Path, flag: str, value: str, says: str
) -> None:
    """Refused where it is set: a one-line error naming the forms, not a driver's
    traceback; the password not repeated; nothing created."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMAGEGATE_")}
    data = tmp_path / "data"
    done = run("serve", "--data-dir", str(data), flag, value, cwd=tmp_path, env=env)
    assert done.returncode == 2, done.stderr
    assert says in done.stderr and "IMAGEGATE_" in done.stderr
    assert "Traceback" not in done.stderr and "s3cr3t" not in done.stderr
    assert not data.exists()


def test_user_data_dir_follows_xdg(tmp_path: Path) -> None:
    assert user_data_dir({"HOME": "/home/u"}) == Path("/home/u/.local/share/imagegate")
    assert user_data_dir({"HOME": "/home/u", "XDG_DATA_HOME": str(tmp_path)}) == (
        tmp_path / "imagegate"
    )
    # A relative XDG_DATA_HOME is invalid by the spec, and ignored.
    assert user_data_dir({"HOME": "/home/u", "XDG_DATA_HOME": "rel"}) == Path(
        "/home/u/.local/share/imagegate"
    )


def run(
    *args: str, cwd: Path, env: dict[str, str], stdin: str = ""
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(IMAGEGATE_BIN), *args],
        cwd=cwd,
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_every_command_uses_one_data_dir_from_any_directory(tmp_path: Path) -> None:
    home = tmp_path / "home"
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("IMAGEGATE_") and k != "XDG_DATA_HOME"
    }
    env["HOME"] = str(home)
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir()
    two.mkdir()
    made = run("keys", "create", "--user", "erin", cwd=one, env=env)
    assert made.returncode == 0, made.stderr
    data = home / ".local" / "share" / "imagegate"
    assert f"data dir {data}" in made.stderr
    listed = run("keys", "list", cwd=two, env=env)
    assert f"data dir {data}" in listed.stderr
    assert "erin" in listed.stdout and "ENTITIES" in listed.stdout
    assert not list(one.iterdir()) and not list(two.iterdir())  # nothing in either cwd
    other = run("keys", "list", "--data-dir", str(tmp_path / "else"), cwd=one, env=env)
    assert "no keys" in other.stdout and f"data dir {tmp_path / 'else'}" in other.stderr
    empty = run("secrets", "list", "--entity", "erin", cwd=one, env=env)
    assert "has no secrets" in empty.stdout
    flags = run("serve", "--help", cwd=one, env=env).stdout
    for item in SETTINGS:
        assert (item.flag in flags) != item.secret, item.flag
    generate_help = run("generate", "--help", cwd=one, env=env).stdout
    assert "IMAGEGATE_URL" in generate_help and "IMAGEGATE_API_KEY" in generate_help


def test_management_commands_work_against_a_running_server(tmp_path: Path) -> None:
    server = start_server(tmp_path / "data")
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMAGEGATE_")}
    env["HOME"] = str(tmp_path / "home")  # no data dir of its own: everything goes over HTTP
    try:
        remote = ("--url", server.url, "--api-key", server.admin_key)
        made = run(
            "keys", "create", "--user", "remy", "--entity", "lab", *remote, cwd=tmp_path, env=env
        )
        assert made.returncode == 0, made.stderr
        key = made.stdout.strip().splitlines()[-1]
        res = httpx.get(f"{server.url}/teams", headers=basic(key))
        assert res.json()["teams"] == [{"name": "lab", "members": 1, "role": "owner"}]
        listed = run("keys", "list", "--user", "remy", *remote, cwd=tmp_path, env=env)
        assert "remy" in listed.stdout and "lab" in listed.stdout
        key_id = listed.stdout.splitlines()[1].split()[0]
        put = run(
            "secrets",
            "set",
            "--entity",
            "lab",
            "OPENAI_API_KEY",
            *remote,
            cwd=tmp_path,
            env=env,
            stdin="sk-x",
        )
        assert put.returncode == 0, put.stderr
        names = run("secrets", "list", "--entity", "lab", *remote, cwd=tmp_path, env=env)
        assert "OPENAI_API_KEY" in names.stdout and "sk-x" not in names.stdout
        assert run("keys", "revoke", key_id, *remote, cwd=tmp_path, env=env).returncode == 0
        assert httpx.get(f"{server.url}/teams", headers=basic(key)).status_code == 401
        # A non-admin key is refused with the server's reason.
        other = httpx.post(f"{server.url}/keys", headers=basic(server.admin_key)).json()["key"]
        httpx.put(
            f"{server.url}/teams/lab/members/admin",
            json={"role": "member"},
            headers=basic(server.admin_key),
        )
        mine = httpx.post(
            f"{server.url}/admin/keys", json={"user": "norm"}, headers=basic(other)
        ).json()["key"]
        denied = run("keys", "list", "--url", server.url, "--api-key", mine, cwd=tmp_path, env=env)
        assert denied.returncode != 0 and "HTTP 403: only server admins" in denied.stderr
        assert not (tmp_path / "home").exists()
    finally:
        stop_server(server)


def test_secrets_set_asks_for_the_value_in_a_terminal(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMAGEGATE_")}
    data = str(tmp_path / "data")
    assert (
        run(
            "keys", "create", "--user", "tess", "--data-dir", data, cwd=tmp_path, env=env
        ).returncode
        == 0
    )
    leader, follower = pty.openpty()
    proc = subprocess.Popen(
        [
            str(IMAGEGATE_BIN),
            "secrets",
            "set",
            "--entity",
            "tess",
            "OPENAI_API_KEY",
            "--data-dir",
            data,
        ],
        stdin=follower,
        stdout=subprocess.PIPE,
        stderr=follower,
        env=env,
        text=True,
    )
    os.close(follower)
    seen = b""
    deadline = time.monotonic() + 60
    while b"OPENAI_API_KEY for tess" not in seen and time.monotonic() < deadline:
        if select.select([leader], [], [], 1)[0]:
            seen += os.read(leader, 1024)
    assert b"OPENAI_API_KEY for tess" in seen, seen
    os.write(leader, b"sk-typed-in-0123456789\n")
    out, _ = proc.communicate(timeout=60)
    os.close(leader)
    assert proc.returncode == 0 and "set OPENAI_API_KEY for entity 'tess'" in out
    listed = run("secrets", "list", "--entity", "tess", "--data-dir", data, cwd=tmp_path, env=env)
    assert "OPENAI_API_KEY" in listed.stdout
