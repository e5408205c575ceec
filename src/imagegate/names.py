"""What an entity, project or user name may be, and how a `project_id` is parsed."""

from __future__ import annotations

import re

# Names become path segments (files are stored per project) and URL parts, so the
# alphabet is narrow, and "." / ".." can never form a segment.
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def check_name(name: str, what: str = "name") -> str:
    if not _NAME.match(name) or ".." in name:
        raise ValueError(
            f"invalid {what} {name!r}: use 1-64 letters, digits, '_', '-' or '.', "
            "starting with a letter or digit"
        )
    return name


def split_project_id(project_id: str) -> tuple[str, str]:
    """`"entity/project"` → `("entity", "project")`, or ValueError saying what is wrong."""
    parts = project_id.split("/")
    if len(parts) != 2:
        raise ValueError(f"project_id must be 'entity/project', got {project_id!r}")
    return check_name(parts[0], "entity name"), check_name(parts[1], "project name")
