"""A generation's reactions (👍/👎) and notes, read from its Weave feedback."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from imagegate.store.feedback import call_ref
from imagegate.store.gallery import GalleryStore
from imagegate.web.session import WebContext

REACTION = "wandb.reaction.1"  # Weave's own types, which its UI and SDK read
NOTE = "wandb.note.1"
EMOJIS = ("👍", "👎")


@dataclass
class Note:
    id: str
    text: str
    user_name: str
    created_at: str
    mine: bool


@dataclass
class Reactions:
    """A generation's feedback as the pages show it."""

    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(EMOJIS, 0))
    mine: set[str] = field(default_factory=set)
    notes: list[Note] = field(default_factory=list)


async def reactions_for(
    ctx: WebContext, project_id: str, call_ids: Sequence[str]
) -> dict[str, Reactions]:
    """Reactions and notes of these calls, in one query."""
    refs = {call_ref(project_id, call_id): call_id for call_id in call_ids}
    found = await ctx.app.traces.feedback.for_refs(project_id, list(refs))
    user_ids = {f["wb_user_id"] for items in found.values() for f in items}
    names = await GalleryStore(ctx.app.engine).user_names(user_ids)
    me = ctx.user().user_id
    result = {}
    for ref, items in found.items():
        reactions = Reactions()
        for item in items:
            payload = item.get("payload") or {}
            if item["feedback_type"] == REACTION and payload.get("emoji") in EMOJIS:
                reactions.counts[payload["emoji"]] += 1
                if item["wb_user_id"] == me:
                    reactions.mine.add(payload["emoji"])
            elif item["feedback_type"] == NOTE and isinstance(payload.get("note"), str):
                uid = item["wb_user_id"] or ""
                reactions.notes.append(
                    Note(
                        item["id"],
                        payload["note"],
                        names.get(uid, uid[:8]),
                        item["created_at"],
                        uid == me,
                    )
                )
        result[refs[ref]] = reactions
    return result
