"""Users, teams, roles, keys and the audit log through the HTTP admin API."""

from __future__ import annotations

import httpx

from imagegate.core import Imagegate
from tests.conftest import Users, basic


async def admin_key(imagegate: Imagegate) -> str:
    key = await imagegate.bootstrap_admin()
    assert key is not None
    return key


async def create(client: httpx.AsyncClient, key: str, project: str) -> httpx.Response:
    return await client.post(
        "/image/create",
        json={
            "project_id": project,
            "inputs": {"model": "local/procedural", "prompt": "a teal owl", "size": "256x256"},
        },
        headers=basic(key),
    )


async def test_admin_manages_users_teams_members_and_keys(
    client: httpx.AsyncClient, imagegate: Imagegate
) -> None:
    admin = await admin_key(imagegate)
    h = basic(admin)
    assert (await client.post("/admin/users", json={"name": "dana"}, headers=h)).status_code == 201
    dup = await client.post("/admin/users", json={"name": "dana"}, headers=h)
    assert dup.status_code == 409
    assert (await client.post("/teams", json={"name": "studio"}, headers=h)).status_code == 201
    res = await client.put("/teams/studio/members/dana", json={"role": "owner"}, headers=h)
    assert res.status_code == 200, res.text
    made = await client.post(
        "/admin/keys", json={"user": "erin", "entity": "studio", "role": "viewer"}, headers=h
    )
    assert made.status_code == 201, made.text
    erin = made.json()["key"]
    users = {u["name"]: u for u in (await client.get("/admin/users", headers=h)).json()["users"]}
    assert users["dana"]["teams"] == {"studio": "owner"}
    assert users["erin"]["teams"] == {"studio": "viewer"}
    assert users["admin"]["is_admin"] is True
    listed = (await client.get("/admin/keys?user=erin", headers=h)).json()["keys"]
    assert [k["entities"] for k in listed] == [["studio"]]
    assert erin not in str(listed) and listed[0]["prefix"] == erin[:9]
    # A viewer reads but neither generates nor uploads.
    refused = await create(client, erin, "studio/art")
    assert refused.status_code == 403 and "viewer" in refused.json()["detail"]
    read = await client.post(
        "/calls/query_stats", json={"project_id": "studio/art"}, headers=basic(erin)
    )
    assert read.status_code == 200
    revoked = await client.delete(f"/admin/keys/{listed[0]['id']}", headers=h)
    assert revoked.status_code == 200
    assert (await create(client, erin, "studio/art")).status_code == 401
    audit = (await client.get("/admin/audit", headers=h)).json()["entries"]
    actions = [(e["actor"], e["action"], e["target"]) for e in reversed(audit)]
    assert actions == [
        ("admin", "user.create", "dana"),
        ("admin", "team.create", "studio"),
        ("admin", "member.set", "studio/dana"),
        ("admin", "key.create", "erin"),
        ("admin", "key.revoke", listed[0]["id"]),
    ]
    assert erin not in str(audit)


async def test_team_owners_manage_members_and_nobody_else(
    client: httpx.AsyncClient, users: Users, imagegate: Imagegate
) -> None:
    # alice made acme (its owner); bob joined it (member); carol is outside.
    await imagegate.teams.create_user("dave")
    add = await client.put(
        "/teams/acme/members/dave", json={"role": "member"}, headers=basic(users.alice)
    )
    assert add.status_code == 200, add.text
    by_member = await client.put(
        "/teams/acme/members/carol", json={"role": "member"}, headers=basic(users.bob)
    )
    assert by_member.status_code == 403
    by_outsider = await client.get("/teams/acme/members", headers=basic(users.carol))
    assert by_outsider.status_code == 403
    members = (await client.get("/teams/acme/members", headers=basic(users.bob))).json()
    assert {m["user"]: m["role"] for m in members["members"]} == {
        "alice": "owner",
        "bob": "member",
        "dave": "member",
    }
    last_owner = await client.delete("/teams/acme/members/alice", headers=basic(users.alice))
    assert last_owner.status_code == 409
    bad_role = await client.put(
        "/teams/acme/members/dave", json={"role": "emperor"}, headers=basic(users.alice)
    )
    assert bad_role.status_code == 422
    gone = await client.delete("/teams/acme/members/bob", headers=basic(users.alice))
    assert gone.status_code == 200
    assert (await create(client, users.bob, "acme/posters")).status_code == 403
    # Admin-only endpoints stay closed to team owners.
    for path in ("/admin/users", "/admin/keys", "/admin/audit"):
        assert (await client.get(path, headers=basic(users.alice))).status_code == 403
    teams = (await client.get("/teams", headers=basic(users.alice))).json()["teams"]
    assert {t["name"]: t["role"] for t in teams} == {"acme": "owner", "alice": "owner"}


async def test_users_make_and_revoke_their_own_keys(
    client: httpx.AsyncClient, users: Users
) -> None:
    made = await client.post("/keys", headers=basic(users.carol))
    assert made.status_code == 201
    new = made.json()
    assert new["key"].startswith(new["prefix"])
    assert (await create(client, new["key"], "carol/own")).status_code == 200
    mine = (await client.get("/keys", headers=basic(users.carol))).json()["keys"]
    assert len(mine) == 2 and new["key"] not in str(mine)
    assert {k["user"] for k in mine} == {"carol"}
    # Nobody revokes someone else's key through /keys.
    stolen = await client.delete(f"/keys/{new['id']}", headers=basic(users.alice))
    assert stolen.status_code == 404
    assert (
        await client.delete(f"/keys/{new['id']}", headers=basic(users.carol))
    ).status_code == 200
    assert (await create(client, new["key"], "carol/own")).status_code == 401
