"""The account pages over HTTP: own keys, team members, budgets, the admin page, and
who may use which."""

from __future__ import annotations

import re

from imagegate.core import Imagegate
from tests.conftest import Users
from tests.web.conftest import Client, token_for


async def test_keys_page_makes_and_revokes_only_ones_own_keys(
    browser_for: Client, users: Users, imagegate: Imagegate
) -> None:
    carol = await browser_for(users.carol)
    token = await token_for(carol, "/ui/keys")
    made = await carol.post("/ui/keys", data={"csrf_token": token})
    key = re.search(r'value="(ig_[^"]+)"', made.text)
    assert made.status_code == 200 and key
    assert made.headers["cache-control"] == "no-store"
    again = await carol.get("/ui/keys")
    assert key[1] not in again.text and key[1][:9] in again.text
    alice = await browser_for(users.alice)
    ids = [k.id for k in await imagegate.accounts.list_keys("carol") if not k.revoked_at]
    stolen = await alice.post(
        f"/ui/keys/{ids[-1]}/revoke", data={"csrf_token": await token_for(alice, "/ui/keys")}
    )
    assert stolen.status_code == 404
    forged = await carol.post(f"/ui/keys/{ids[-1]}/revoke", data={"csrf_token": "nope"})
    assert forged.status_code == 403
    assert await imagegate.accounts.authenticate(key[1]) is not None
    ok = await carol.post(f"/ui/keys/{ids[-1]}/revoke", data={"csrf_token": token})
    assert ok.status_code == 303
    assert await imagegate.accounts.authenticate(key[1]) is None


async def test_team_page_owner_manages_members_member_only_reads(
    browser_for: Client, users: Users, imagegate: Imagegate
) -> None:
    await imagegate.teams.create_user("dave")
    alice = await browser_for(users.alice)  # owner of acme
    token = await token_for(alice, "/ui/teams/acme")
    res = await alice.post(
        "/ui/teams/acme/members", data={"csrf_token": token, "user": "dave", "role": "viewer"}
    )
    assert res.status_code == 303
    assert [m.role for m in await imagegate.teams.members("acme") if m.user == "dave"] == ["viewer"]
    bob = await browser_for(users.bob)  # member
    page = await bob.get("/ui/teams/acme")
    assert page.status_code == 200 and "dave" in page.text and "Add member" not in page.text
    refused = await bob.post(
        "/ui/teams/acme/members",
        data={"csrf_token": await token_for(bob, "/ui/teams/acme"), "user": "dave", "remove": "1"},
    )
    assert refused.status_code == 403
    carol = await browser_for(users.carol)
    assert (await carol.get("/ui/teams/acme")).status_code == 404
    budget = await alice.post(
        "/ui/budget",
        data={"csrf_token": token, "entity": "acme", "limit_usd": "12.5", "period": "daily"},
    )
    assert budget.status_code == 303
    page = await alice.get("/ui/teams/acme")
    assert "Team budget · daily · soft" in page.text and "$12.50" in page.text


async def test_admin_page_is_for_server_admins(
    browser_for: Client, users: Users, imagegate: Imagegate
) -> None:
    alice = await browser_for(users.alice)
    assert (await alice.get("/ui/admin")).status_code == 403
    admin_key = await imagegate.bootstrap_admin()
    assert admin_key is None  # users exist: no bootstrap
    admin_key = await imagegate.accounts.create_key("root", "ops", is_admin=True)
    root = await browser_for(admin_key)
    page = await root.get("/ui/admin")
    assert page.status_code == 200 and "alice" in page.text and "key.create" not in page.text
    token = await token_for(root, "/ui/admin")
    made = await root.post(
        "/ui/admin/teams", data={"csrf_token": token, "name": "studio", "owner": "carol"}
    )
    assert made.status_code == 303 and made.headers["location"] == "/ui/teams/studio"
    page = await root.get("/ui/admin")
    assert "team.create" in page.text and "member.set" in page.text
