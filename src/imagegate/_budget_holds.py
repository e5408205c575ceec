"""A generation's estimated cost held against its project's and team's budgets, then
settled at its real cost: GenerationService's budget policy, apart from its orchestration."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from imagegate.errors import BudgetExceeded
from imagegate.pricing import estimate_cost
from imagegate.providers import ImageRequest
from imagegate.store.budgets import BudgetStore, Reservation

if TYPE_CHECKING:
    from imagegate.metrics import Metrics

log = logging.getLogger("imagegate.generation")


class BudgetHolds:
    """Holds on budgets and their settling; without a BudgetStore, nothing is held."""

    def __init__(
        self, budgets: BudgetStore | None, metrics: Metrics | None, *, allow_unpriced: bool
    ) -> None:
        self.budgets = budgets
        self.metrics = metrics
        # Whether an unpriced model may run in a project under a budget (holding 0).
        self.allow_unpriced = allow_unpriced

    async def amount(self, project_id: str, request: ImageRequest) -> float | None:
        """What to hold against the project's and team's budgets: the estimated cost
        (0 for an unpriced model where allowed), None for nothing to hold."""
        if self.budgets is None:
            return None
        estimate = estimate_cost(
            request.spec,
            prompt=request.prompt,
            images=request.n,
            quality=request.params.get("quality"),
            size=request.size,
        )
        if estimate is not None:
            return estimate
        if not await self.budgets.has_budget(project_id):
            return None
        if not self.allow_unpriced:
            self.refused(None)
            raise BudgetExceeded(
                f"model {request.model!r} has no price, and project {project_id!r} has "
                "a budget: this server does not allow unpriced models under a budget "
                "(setting budget_allow_unpriced)"
            )
        return 0.0

    async def reserve(
        self, project_id: str, amount: float | None, reservation: Reservation
    ) -> None:
        """Hold `amount` against the budgets in a transaction of its own, adding to
        `reservation`; BudgetExceeded holds nothing."""
        if self.budgets is None or amount is None:
            return
        try:
            held = await self.budgets.reserve(project_id, amount)
        except BudgetExceeded as exc:
            self.refused(exc)
            raise
        reservation.held += held.held
        reservation.warnings += held.warnings

    def refused(self, exc: BudgetExceeded | None) -> None:
        """Count a refusal by its budget's scope (`unpriced` for an unpriced model's)."""
        if self.metrics is not None:
            scope = ((exc.budget if exc else None) or {}).get("scope", "unpriced")
            self.metrics.budget_refused.labels(scope).inc()

    async def settle(self, project_id: str, reservation: Reservation, cost: float) -> None:
        """Settle what `reservation` still holds at `cost` (a generation that died on the
        way: its estimate). A failure is logged; the answer stands, the hold stays."""
        if self.budgets is not None and reservation.held:
            try:
                await self.budgets.settle(reservation, cost)
            except Exception:  # the answer stands; the reservation stays held
                log.exception("settling the budget of %s failed", project_id)
