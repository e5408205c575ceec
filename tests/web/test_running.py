"""A long generation shows in the gallery and on its page as running, with how long."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from imagegate.core import Imagegate
from imagegate.ids import uuid7
from imagegate.weave_shape import OP_NAME
from tests.conftest import Users
from tests.web.conftest import Client, Generate


async def test_running_generation_shows_elapsed_time(
    browser_for: Client, users: Users, imagegate: Imagegate
) -> None:
    principal = await imagegate.accounts.authenticate(users.alice)
    assert principal is not None
    await imagegate.accounts.ensure_project("alice/slow")
    call_id = uuid7()
    # Recorded as the service records a generation before the provider answers.
    await imagegate.calls.start(
        {
            "id": call_id,
            "project_id": "alice/slow",
            "op_name": OP_NAME,
            "display_name": None,
            "trace_id": uuid7(),
            "parent_id": None,
            "started_at": datetime.now(UTC) - timedelta(minutes=2, seconds=5),
            "attributes": {},
            "inputs": {"model": "gpt-image-2", "prompt": "a slow glacier", "n": 1},
            "wb_user_id": principal.user_id,
        }
    )
    alice = await browser_for(users.alice)
    gallery = await alice.get("/ui/p/alice/slow")
    assert gallery.status_code == 200
    assert re.search(
        r"running · <span class=\"elapsed\" data-since=\"[^\"]+\">2 min [5-9] s<", gallery.text
    )
    detail = await alice.get(f"/ui/p/alice/slow/calls/{call_id}")
    assert detail.status_code == 200
    assert re.search(r"running for <span class=\"elapsed\"[^>]*>2 min [5-9] s<", detail.text)
    assert "status running" in detail.text


async def test_finished_generation_shows_its_timeout(
    browser_for: Client, users: Users, generate: Generate
) -> None:
    call = await generate(users.alice, "alice/slow", "a quick fox")
    assert call["summary"]["timeout_s"] == 120  # local/procedural: the default
    alice = await browser_for(users.alice)
    detail = await alice.get(f"/ui/p/alice/slow/calls/{call['id']}")
    assert re.search(r"<dt>Timeout</dt><dd>120\.00 s <span", detail.text)
