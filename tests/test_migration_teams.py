"""Migration 0008_teams on a database with accounts: every key and membership survives
(a table rebuild on SQLite would cascade-delete them), roles and admins are set, and it
downgrades and upgrades again."""

from __future__ import annotations

import secrets
import uuid
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import command

from imagegate.config import Settings
from imagegate.core import open_file_store
from imagegate.store import AccountStore
from imagegate.store.accounts import hash_key
from imagegate.store.db import alembic_config, create_engine, migrate
from imagegate.store.tables import Timestamp

TEAMS = "0008_teams"


def previous_revision() -> str:
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(alembic_config()).get_revision(TEAMS)
    assert script is not None and isinstance(script.down_revision, str)
    return script.down_revision


async def seed_before(engine) -> dict[str, str]:  # type: ignore[no-untyped-def]
    """admin (own entity), alice (own entity, and member of acme made by admin)."""
    now = datetime.now(UTC)
    ids = {name: str(uuid.uuid4()) for name in ("admin", "alice", "e-admin", "e-alice", "e-acme")}
    keys = {name: "ig_" + secrets.token_urlsafe(32) for name in ("admin", "alice")}
    rows = [
        ("users", {"id": ids["admin"], "name": "admin", "created_at": now}),
        ("users", {"id": ids["alice"], "name": "alice", "created_at": now}),
        ("entities", {"id": ids["e-admin"], "name": "admin", "created_at": now}),
        ("entities", {"id": ids["e-alice"], "name": "alice", "created_at": now}),
        ("entities", {"id": ids["e-acme"], "name": "acme", "created_at": now}),
        ("memberships", {"user_id": ids["admin"], "entity_id": ids["e-admin"], "created_at": now}),
        ("memberships", {"user_id": ids["alice"], "entity_id": ids["e-alice"], "created_at": now}),
        ("memberships", {"user_id": ids["alice"], "entity_id": ids["e-acme"], "created_at": now}),
    ]
    for user, key in keys.items():
        rows.append(
            (
                "api_keys",
                {
                    "id": str(uuid.uuid4()),
                    "user_id": ids[user],
                    "key_hash": hash_key(key),
                    "prefix": key[:9],
                    "created_at": now,
                },
            )
        )
    async with engine.begin() as conn:
        for table, values in rows:
            columns = [
                sa.column(name, Timestamp if name == "created_at" else sa.String) for name in values
            ]
            await conn.execute(sa.table(table, *columns).insert().values(values))
    return keys


async def test_upgrade_keeps_accounts_and_sets_roles(settings: Settings) -> None:
    engine = create_engine(settings.resolved_database_url)
    files = open_file_store(settings)
    try:
        await migrate(engine, files=files, revision=previous_revision())
        keys = await seed_before(engine)
        await migrate(engine, files=files)
        accounts = AccountStore(engine)
        admin = await accounts.authenticate(keys["admin"])
        alice = await accounts.authenticate(keys["alice"])
        assert admin is not None and alice is not None, "keys lost in the migration"
        assert admin.is_admin and not alice.is_admin
        assert dict(alice.roles) == {"alice": "owner", "acme": "member"}
        assert dict(admin.roles) == {"admin": "owner"}

        def down_and_up(connection: sa.Connection) -> None:
            config = alembic_config()
            config.attributes["connection"] = connection
            config.attributes["files"] = files
            command.downgrade(config, previous_revision())
            command.upgrade(config, "head")

        async with engine.begin() as conn:
            await conn.run_sync(down_and_up)
        again = await accounts.authenticate(keys["alice"])
        assert again is not None and dict(again.roles) == {"alice": "owner", "acme": "member"}
    finally:
        await engine.dispose()
