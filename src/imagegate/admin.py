"""Managing users, teams, memberships, keys, budgets and provider keys: who may do what,
and an audit-log entry for every change. The admin API, the web pages and the CLI all
go through here.

Who may: server admins everything; a team's owners its members, budgets and provider
keys; every user their own keys. The CLI on the database itself (`actor` "cli") is the
operator and may do everything.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from imagegate.errors import Conflict, Forbidden, InvalidInput, NotFound
from imagegate.names import check_name, split_project_id
from imagegate.store import AccountStore, Principal
from imagegate.store.accounts import ROLES, KeyInfo, Role, key_prefix
from imagegate.store.budgets import PERIODS, Budget, BudgetStatus, BudgetStore, Period, Scope
from imagegate.store.secrets import SecretStore, check_secret_name
from imagegate.store.teams import AuditEntry, Member, TeamStore, UserInfo

Actor = Principal | str  # a signed-in caller, or "cli"


@dataclass(frozen=True)
class NewKey:
    id: str
    key: str  # shown once
    prefix: str


def _name(actor: Actor) -> str:
    return actor if isinstance(actor, str) else actor.user_name


def _is_admin(actor: Actor) -> bool:
    return isinstance(actor, str) or actor.is_admin


def _require_admin(actor: Actor) -> None:
    if not _is_admin(actor):
        raise Forbidden("only server admins may do this")


def _require_manager(actor: Actor, entity: str) -> None:
    if not (isinstance(actor, str) or actor.can_manage(entity)):
        raise Forbidden(f"only owners of team {entity!r} and server admins may do this")


def _checked(value: str, what: str, loc: str) -> str:
    try:
        return check_name(value, what)
    except ValueError as exc:
        raise InvalidInput(["body", loc], str(exc)) from exc


def default_project_id(project: str, entity: str) -> str:
    """A key's default project as "entity/project": PROJECT alone is in the key's entity,
    and ENTITY/PROJECT must name that entity."""
    project_id = project if "/" in project else f"{entity}/{project}"
    try:
        split_project_id(project_id)
    except ValueError as exc:
        raise InvalidInput(["body", "project"], str(exc)) from exc
    if project_id.split("/", 1)[0] != entity:
        message = f"the project must be in the key's entity {entity!r}"
        raise InvalidInput(["body", "project"], message)
    return project_id


class Admin:
    def __init__(
        self,
        accounts: AccountStore,
        teams: TeamStore,
        budgets: BudgetStore,
        secrets: SecretStore,
    ) -> None:
        self.accounts = accounts
        self.teams = teams
        self.budgets = budgets
        self.secrets = secrets

    # -- keys -------------------------------------------------------------------------

    async def own_keys(self, actor: Principal) -> list[KeyInfo]:
        return await self.accounts.list_keys(actor.user_name)

    async def create_own_key(self, actor: Principal) -> NewKey:
        key, key_id = await self.accounts.new_key_for(actor.user_id)
        await self.teams.audit(actor.user_name, "key.create", actor.user_name, {"key_id": key_id})
        return NewKey(key_id, key, key_prefix(key))

    async def revoke_own_key(self, actor: Principal, key_id: str) -> None:
        if not await self.accounts.revoke_key(key_id, user_id=actor.user_id):
            raise NotFound("you have no active key with this id")
        await self.teams.audit(actor.user_name, "key.revoke", actor.user_name, {"key_id": key_id})

    async def all_keys(self, actor: Actor, user: str | None = None) -> list[KeyInfo]:
        _require_admin(actor)
        return await self.accounts.list_keys(user)

    async def create_key_for(
        self,
        actor: Actor,
        user: str,
        entity: str | None = None,
        role: Role | None = None,
        *,
        is_admin: bool = False,
        project: str | None = None,
    ) -> str:
        """A key for `user` (created if missing, joining `entity`, created if missing);
        `is_admin` makes the user a server admin. `project` (PROJECT or ENTITY/PROJECT,
        in the key's entity) is where requests that name none go (the OpenAI door)."""
        _require_admin(actor)
        _checked(user, "user name", "user")
        if entity:
            _checked(entity, "entity name", "entity")
        if role is not None and role not in ROLES:
            raise InvalidInput(["body", "role"], f"role must be one of {', '.join(ROLES)}")
        default_project = None
        if project is not None:
            default_project = default_project_id(project, entity or user)
        key = await self.accounts.create_key(
            user, entity, role=role, is_admin=is_admin, default_project=default_project
        )
        details: dict[str, Any] = {
            "entity": entity or user,
            "prefix": key_prefix(key),
            "is_admin": is_admin,
        }
        if default_project:
            details["project"] = default_project
        await self.teams.audit(_name(actor), "key.create", user, details)
        return key

    async def revoke_key(self, actor: Actor, key_id: str) -> bool:
        _require_admin(actor)
        if not await self.accounts.revoke_key(key_id):
            return False
        # The id, or for the CLI's revoke-by-key only the key's prefix: never the key.
        target = key_id if len(key_id) == 36 else key_prefix(key_id) + "…"
        await self.teams.audit(_name(actor), "key.revoke", target)
        return True

    # -- users and teams ----------------------------------------------------------------

    async def users(self, actor: Actor) -> list[UserInfo]:
        _require_admin(actor)
        return await self.teams.users()

    async def create_user(self, actor: Actor, name: str, *, is_admin: bool = False) -> None:
        _require_admin(actor)
        _checked(name, "user name", "name")
        if not await self.teams.create_user(name, is_admin=is_admin):
            raise Conflict(f"user {name!r} exists")
        await self.teams.audit(_name(actor), "user.create", name, {"is_admin": is_admin})

    async def visible_teams(self, actor: Principal) -> list[tuple[str, int]]:
        return await self.teams.teams(None if actor.is_admin else actor.entities)

    async def create_team(self, actor: Actor, name: str) -> None:
        _require_admin(actor)
        _checked(name, "entity name", "name")
        if not await self.teams.create_team(name):
            raise Conflict(f"team {name!r} exists")
        await self.teams.audit(_name(actor), "team.create", name)

    async def members(self, actor: Principal, entity: str) -> list[Member]:
        if not (actor.is_admin or entity in actor.entities):
            raise Forbidden(f"you are not a member of team {entity!r}")
        return await self.teams.members(entity)

    async def set_member(self, actor: Actor, entity: str, user: str, role: str) -> None:
        _require_manager(actor, entity)
        if role not in ROLES:
            raise InvalidInput(["body", "role"], f"role must be one of {', '.join(ROLES)}")
        entity_id, user_id = await self._ids(entity, user)
        if role != "owner":
            await self._keep_an_owner(entity, user)
        await self.teams.set_member(entity_id, user_id, role)
        await self.teams.audit(_name(actor), "member.set", f"{entity}/{user}", {"role": role})

    async def remove_member(self, actor: Actor, entity: str, user: str) -> None:
        _require_manager(actor, entity)
        entity_id, user_id = await self._ids(entity, user)
        await self._keep_an_owner(entity, user)
        if not await self.teams.remove_member(entity_id, user_id):
            raise NotFound(f"{user!r} is not a member of team {entity!r}")
        await self.teams.audit(_name(actor), "member.remove", f"{entity}/{user}")

    async def _ids(self, entity: str, user: str) -> tuple[str, str]:
        entity_id = await self.teams.entity_id(entity)
        if entity_id is None:
            raise NotFound(f"no team {entity!r}")
        user_id = await self.teams.user_id(user)
        if user_id is None:
            raise NotFound(f"no user {user!r}")
        return entity_id, user_id

    async def _keep_an_owner(self, entity: str, leaving: str) -> None:
        """A team always keeps an owner, or nobody but admins could manage it."""
        owners = [m.user for m in await self.teams.members(entity) if m.role == "owner"]
        if owners == [leaving]:
            raise Conflict(f"{leaving!r} is the last owner of team {entity!r}: add another first")

    # -- budgets ------------------------------------------------------------------------

    async def set_budget(
        self,
        actor: Actor,
        scope: Scope,
        target: str,
        *,
        period: str,
        limit_usd: float,
        hard: bool,
    ) -> Budget:
        entity = self._budget_entity(scope, target)
        _require_manager(actor, entity)
        if period not in PERIODS:
            raise InvalidInput(["body", "period"], f"period must be one of {', '.join(PERIODS)}")
        if not limit_usd >= 0 or limit_usd == float("inf"):
            raise InvalidInput(["body", "limit_usd"], "limit_usd must be a number >= 0")
        if await self.teams.entity_id(entity) is None:
            raise NotFound(f"no team {entity!r}")
        period_: Period = "daily" if period == "daily" else "monthly"
        budget = await self.budgets.set(
            scope, target, period=period_, limit_usd=limit_usd, hard=hard
        )
        details: dict[str, Any] = {"period": period, "limit_usd": limit_usd, "hard": hard}
        await self.teams.audit(_name(actor), f"budget.set.{scope}", target, details)
        return budget

    async def delete_budget(self, actor: Actor, scope: Scope, target: str) -> None:
        _require_manager(actor, self._budget_entity(scope, target))
        if not await self.budgets.delete(scope, target):
            raise NotFound(f"no budget on {target!r}")
        await self.teams.audit(_name(actor), f"budget.delete.{scope}", target)

    async def budget_status(
        self, actor: Principal, scope: Scope, target: str
    ) -> list[BudgetStatus]:
        entity = self._budget_entity(scope, target)
        if not (actor.is_admin or entity in actor.entities):
            raise Forbidden(f"you do not have access to {target!r}")
        if scope == "project":
            return await self.budgets.status(target)
        return await self.budgets.status(entity=target)

    @staticmethod
    def _budget_entity(scope: Scope, target: str) -> str:
        if scope == "project":
            try:
                return split_project_id(target)[0]
            except ValueError as exc:
                raise NotFound(str(exc)) from exc
        return target

    # -- provider keys --------------------------------------------------------------------

    async def secret_names(self, actor: Actor, entity: str) -> list[tuple[str, Any]]:
        _require_manager(actor, entity)
        return await self.secrets.names(entity)

    async def set_secret(self, actor: Actor, entity: str, name: str, value: str) -> None:
        _require_manager(actor, entity)
        try:
            check_secret_name(name)
        except ValueError as exc:
            raise InvalidInput(["path", "name"], str(exc)) from exc
        try:
            await self.secrets.set(entity, name, value)
        except LookupError as exc:
            raise NotFound(str(exc)) from exc
        await self.teams.audit(_name(actor), "secret.set", f"{entity}/{name}")  # never the value

    async def delete_secret(self, actor: Actor, entity: str, name: str) -> bool:
        _require_manager(actor, entity)
        if not await self.secrets.delete(entity, name):
            return False
        await self.teams.audit(_name(actor), "secret.delete", f"{entity}/{name}")
        return True

    # -- audit ----------------------------------------------------------------------------

    async def audit_log(
        self, actor: Actor, limit: int = 100, before: str | None = None
    ) -> list[AuditEntry]:
        _require_admin(actor)
        return await self.teams.audit_entries(limit, before)
