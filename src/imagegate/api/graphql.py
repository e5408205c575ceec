"""The few W&B GraphQL operations `weave.init` sends, answered from imagegate's accounts.

`weave.init("entity/project")` asks W&B's GraphQL API (at WANDB_BASE_URL/graphql) who
the caller is and whether the project exists, creating it if not. imagegate has no
GraphQL engine: it recognises those operations by name and answers each with the exact
fields the client selects. Anything else is a GraphQL error naming what is supported.
"""

from __future__ import annotations

import re
from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel

from imagegate.api.deps import App, Caller
from imagegate.names import split_project_id
from imagegate.store import Principal

router = APIRouter(tags=["W&B compatibility"])

_OPERATION = re.compile(r"^\s*(query|mutation)\s+(\w+)")
SUPPORTED = ("Project", "UpsertModel", "DefaultEntity", "ServerInfo", "Entity")
PERMISSION_ERROR = "PERMISSION_ERROR"  # the code weave turns into a clear message


class GraphQLReq(BaseModel):
    query: str
    variables: dict[str, Any] | None = None
    operationName: str | None = None


def _error(message: str, code: str | None = None) -> dict[str, Any]:
    error: dict[str, Any] = {"message": message}
    if code:
        error["extensions"] = {"code": code}
    return {"data": None, "errors": [error]}


@router.post("/graphql")
async def graphql(req: GraphQLReq, request: Request, app: App, caller: Caller) -> dict[str, Any]:
    match = _OPERATION.match(req.query)
    name = req.operationName or (match[2] if match else None)
    variables = req.variables or {}
    if name == "DefaultEntity":
        return {"data": {"viewer": _viewer(caller)}}
    if name == "ServerInfo":
        base = app.settings.public_url or str(request.base_url)
        return {"data": {"serverInfo": {"frontendHost": base.rstrip("/")}}}
    if name == "Entity":
        entity = str(variables.get("entityName", ""))
        member = entity in caller.entities
        return {
            "data": {
                "viewer": {"username": caller.user_name},
                "entity": {"readOnly": False} if member else None,
            }
        }
    if name in ("Project", "UpsertModel"):
        entity = str(variables.get("entityName") or variables.get("entity") or "")
        project = str(variables.get("name") or "")
        project_id = f"{entity}/{project}"
        try:
            split_project_id(project_id)
        except ValueError as exc:
            return _error(str(exc))
        if entity not in caller.entities:
            # The same answer whether or not the project exists, as on every endpoint.
            return _error(f"you do not have access to project {project_id!r}", PERMISSION_ERROR)
        if name == "Project":
            exists = await app.accounts.project_exists(project_id)
            return {"data": {"project": {"name": project} if exists else None}}
        await app.accounts.ensure_project(project_id)
        return {"data": {"upsertModel": {"model": {"name": project, "description": None}}}}
    return _error(
        f"imagegate answers only the GraphQL operations weave.init sends "
        f"({', '.join(SUPPORTED)}); got {name or 'an unnamed operation'!r}"
    )


def _viewer(caller: Principal) -> dict[str, Any]:
    # The user's own entity when there is one (as W&B's personal entity), else the first.
    entities = sorted(caller.entities)
    default = caller.user_name if caller.user_name in caller.entities else None
    default = default or (entities[0] if entities else None)
    return {
        "username": caller.user_name,
        "defaultEntity": {"name": default} if default else None,
    }
