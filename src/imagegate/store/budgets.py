"""Budgets: spending limits per project or team, per day or month (UTC), in USD.

A generation reserves its estimated cost before the provider is called and settles the
real cost afterwards. Each reservation is one conditional UPDATE of the budget's
window row (`spent + reserved + amount <= limit`): PostgreSQL re-checks the condition
against the row as the previous writer left it, and SQLite has one writer at a time, so
concurrent requests on any number of replicas can overshoot a hard budget only by what
their estimates missed, never by a race.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from imagegate.errors import BudgetExceeded
from imagegate.ids import uuid7
from imagegate.store.tables import budget_windows, budgets

Scope = Literal["project", "entity"]
Period = Literal["daily", "monthly"]
PERIODS: tuple[Period, ...] = ("daily", "monthly")


@dataclass(frozen=True)
class Budget:
    id: str
    scope: Scope
    target: str  # "entity/project" or the entity's name
    period: Period
    limit_usd: float
    hard: bool


@dataclass(frozen=True)
class BudgetStatus:
    budget: Budget
    window_start: datetime
    spent_usd: float
    reserved_usd: float

    @property
    def remaining_usd(self) -> float:
        return max(0.0, self.budget.limit_usd - self.spent_usd - self.reserved_usd)


@dataclass
class Reservation:
    """What one generation holds: (budget id, window, amount) per budget, and warnings
    for soft budgets it went over."""

    held: list[tuple[str, datetime, float]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def window_start(period: Period, now: datetime) -> datetime:
    now = now.astimezone(UTC)
    day = now.replace(hour=0, minute=0, second=0, microsecond=0)
    return day if period == "daily" else day.replace(day=1)


def describe(budget: Budget) -> str:
    what = "project" if budget.scope == "project" else "team"
    kind = "hard" if budget.hard else "soft"
    return f"{what} {budget.target!r} {budget.period} {kind} budget of ${budget.limit_usd:g}"


class BudgetStore:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def set(
        self, scope: Scope, target: str, *, period: Period, limit_usd: float, hard: bool
    ) -> Budget:
        """Create or replace the budget of a project or team."""
        now = datetime.now(UTC)
        async with self.engine.begin() as conn:
            existing = await conn.scalar(
                sa.select(budgets.c.id).where(budgets.c.scope == scope, budgets.c.target == target)
            )
            values = {"period": period, "limit_usd": limit_usd, "hard": hard, "updated_at": now}
            if existing:
                await conn.execute(budgets.update().where(budgets.c.id == existing).values(values))
                budget_id = str(existing)
            else:
                budget_id = uuid7()
                await conn.execute(
                    budgets.insert().values(id=budget_id, scope=scope, target=target, **values)
                )
        return Budget(budget_id, scope, target, period, limit_usd, hard)

    async def delete(self, scope: Scope, target: str) -> bool:
        async with self.engine.begin() as conn:
            result = await conn.execute(
                budgets.delete().where(budgets.c.scope == scope, budgets.c.target == target)
            )
        return bool(result.rowcount)

    async def _applying(self, conn: AsyncConnection, project_id: str) -> list[Budget]:
        entity = project_id.split("/", 1)[0]
        rows = await conn.execute(
            sa.select(budgets)
            .where(
                sa.or_(
                    sa.and_(budgets.c.scope == "project", budgets.c.target == project_id),
                    sa.and_(budgets.c.scope == "entity", budgets.c.target == entity),
                )
            )
            .order_by(budgets.c.id)  # one lock order for every transaction: no deadlocks
        )
        return [_budget(r) for r in rows]

    async def status(
        self, project_id: str | None = None, *, entity: str | None = None
    ) -> list[BudgetStatus]:
        """The budgets over a project (its own and its team's), or a team's own."""
        now = datetime.now(UTC)
        async with self.engine.connect() as conn:
            if project_id is not None:
                found = await self._applying(conn, project_id)
            else:
                rows = await conn.execute(
                    sa.select(budgets).where(
                        budgets.c.scope == "entity", budgets.c.target == entity
                    )
                )
                found = [_budget(r) for r in rows]
            result = []
            for budget in found:
                start = window_start(budget.period, now)
                row = (
                    await conn.execute(
                        sa.select(budget_windows.c.spent_usd, budget_windows.c.reserved_usd).where(
                            budget_windows.c.budget_id == budget.id,
                            budget_windows.c.window_start == start,
                        )
                    )
                ).first()
                spent, reserved = (float(row[0]), float(row[1])) if row else (0.0, 0.0)
                result.append(BudgetStatus(budget, start, spent, reserved))
        return result

    async def has_budget(self, project_id: str) -> bool:
        async with self.engine.connect() as conn:
            return bool(await self._applying(conn, project_id))

    async def reserve(self, project_id: str, amount: float) -> Reservation:
        """Hold `amount` (USD) against every budget over the project, or raise
        BudgetExceeded (holding nothing) when a hard one cannot take it."""
        reservation = Reservation()
        now = datetime.now(UTC)
        async with self.engine.begin() as conn:
            for budget in await self._applying(conn, project_id):
                start = window_start(budget.period, now)
                await _ensure_window(conn, budget.id, start)
                level = budget_windows.c.spent_usd + budget_windows.c.reserved_usd
                query = budget_windows.update().where(
                    budget_windows.c.budget_id == budget.id,
                    budget_windows.c.window_start == start,
                )
                if budget.hard and amount > 0:
                    query = query.where(level + amount <= budget.limit_usd)
                row = (
                    await conn.execute(
                        query.values(reserved_usd=budget_windows.c.reserved_usd + amount).returning(
                            budget_windows.c.spent_usd, budget_windows.c.reserved_usd
                        )
                    )
                ).first()
                if row is None:
                    # Raising rolls back what this transaction reserved in other budgets.
                    spent, reserved = await _levels(conn, budget.id, start)
                    raise BudgetExceeded(
                        f"the {describe(budget)} cannot take this generation "
                        f"(estimated ${amount:.4f}; spent ${spent:.4f}, "
                        f"${reserved:.4f} reserved by running generations)",
                        budget=budget_body(budget, start, spent, reserved),
                    )
                reservation.held.append((budget.id, start, amount))
                if float(row.spent_usd) + float(row.reserved_usd) > budget.limit_usd:
                    reservation.warnings.append(
                        f"over the {describe(budget)}: ${float(row.spent_usd):.4f} spent"
                    )
        return reservation

    async def settle(self, reservation: Reservation, cost: float) -> None:
        """Release the reservation and record what the generation really cost."""
        if not reservation.held:
            return
        async with self.engine.begin() as conn:
            for budget_id, start, amount in reservation.held:
                await conn.execute(
                    budget_windows.update()
                    .where(
                        budget_windows.c.budget_id == budget_id,
                        budget_windows.c.window_start == start,
                    )
                    .values(
                        reserved_usd=budget_windows.c.reserved_usd - amount,
                        spent_usd=budget_windows.c.spent_usd + cost,
                    )
                )


def budget_body(
    budget: Budget, start: datetime, spent: float, reserved: float
) -> dict[str, object]:
    """A budget as the API shows it."""
    return {
        "scope": "project" if budget.scope == "project" else "team",
        "target": budget.target,
        "period": budget.period,
        "limit_usd": budget.limit_usd,
        "hard": budget.hard,
        "window_start": start.isoformat(),
        "spent_usd": round(spent, 10),
        "reserved_usd": round(reserved, 10),
        "remaining_usd": round(max(0.0, budget.limit_usd - spent - reserved), 10),
    }


def _budget(row: sa.Row[Any]) -> Budget:
    return Budget(row.id, row.scope, row.target, row.period, float(row.limit_usd), bool(row.hard))


async def _ensure_window(conn: AsyncConnection, budget_id: str, start: datetime) -> None:
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    await conn.execute(
        dialect.insert(budget_windows)
        .values(budget_id=budget_id, window_start=start, spent_usd=0.0, reserved_usd=0.0)
        .on_conflict_do_nothing()
    )


async def _levels(conn: AsyncConnection, budget_id: str, start: datetime) -> tuple[float, float]:
    row = (
        await conn.execute(
            sa.select(budget_windows.c.spent_usd, budget_windows.c.reserved_usd).where(
                budget_windows.c.budget_id == budget_id, budget_windows.c.window_start == start
            )
        )
    ).first()
    return (float(row[0]), float(row[1])) if row else (0.0, 0.0)
