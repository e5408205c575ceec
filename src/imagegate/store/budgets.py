"""Budgets: spending limits per project or team, per day or month (UTC), in USD.

A generation reserves its estimated cost before the provider is called and settles the
real cost afterwards. Each reservation is one conditional UPDATE of the budget's
window row (`spent + reserved + amount <= limit`, the limit and hardness read from the
budget's own row in the same statement): PostgreSQL re-checks the condition against the
row as the previous writer left it, and SQLite has one writer at a time, so concurrent
requests on any number of replicas can overshoot a hard budget only by what their
estimates missed, never by a race.

Which budgets apply to a project is looked up on every generation, so it is cached like
the caller (store/cache.py): at most `cache_ttl` old, cleared at once by the process
that sets or deletes a budget. A cached budget deleted meanwhile is skipped; a limit
changed meanwhile is read live by the reservation itself.
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
from imagegate.store.cache import TTLCache
from imagegate.store.db import transaction
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
    def __init__(self, engine: AsyncEngine, *, cache_ttl: float = 0.0) -> None:
        self.engine = engine
        self._applying_cache: TTLCache[str, tuple[Budget, ...]] = TTLCache(cache_ttl)

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
        self._applying_cache.clear()
        return Budget(budget_id, scope, target, period, limit_usd, hard)

    async def delete(self, scope: Scope, target: str) -> bool:
        async with self.engine.begin() as conn:
            result = await conn.execute(
                budgets.delete().where(budgets.c.scope == scope, budgets.c.target == target)
            )
        self._applying_cache.clear()
        return bool(result.rowcount)

    async def applying(self, project_id: str) -> tuple[Budget, ...]:
        """The budgets over a project (its own and its team's), in lock order; cached."""

        async def load() -> tuple[Budget, ...]:
            async with self.engine.connect() as conn:
                return tuple(await self._applying(conn, project_id))

        return await self._applying_cache.get(project_id, load)

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
        return bool(await self.applying(project_id))

    async def reserve(
        self, project_id: str, amount: float, *, conn: AsyncConnection | None = None
    ) -> Reservation:
        """Hold `amount` (USD) against every budget over the project, or raise
        BudgetExceeded (holding nothing) when a hard one cannot take it. In `conn`'s
        transaction when given (the one that records the call)."""
        applying = await self.applying(project_id)
        if not applying:
            return Reservation()
        async with transaction(self.engine, conn) as conn:
            return await conn.run_sync(reserve_in, applying, amount)

    async def settle(
        self, reservation: Reservation, cost: float, *, conn: AsyncConnection | None = None
    ) -> None:
        """Release the reservation and record what the generation really cost (in
        `conn`'s transaction when given: the one that records the call's end)."""
        if not reservation.held:
            return
        async with transaction(self.engine, conn) as conn:
            await conn.execute(SETTLE, settlements(reservation.held, cost))


_WINDOW_START = budget_windows.c.window_start.type
_SETTLE_START = sa.bindparam("s_start", type_=_WINDOW_START)
# Whether a window can take `amount` more, judged by the budget's own row as it is now
# (a limit lowered or a budget made hard on another replica counts at once).
_fits = sa.exists(
    sa.select(budgets.c.id).where(
        budgets.c.id == budget_windows.c.budget_id,
        sa.or_(
            budgets.c.hard.is_(False),
            sa.bindparam("r_amount", type_=sa.Float) <= 0,
            budget_windows.c.spent_usd
            + budget_windows.c.reserved_usd
            + sa.bindparam("r_amount", type_=sa.Float)
            <= budgets.c.limit_usd,
        ),
    )
)
RESERVE = (
    budget_windows.update()
    .where(
        budget_windows.c.budget_id == sa.bindparam("r_budget"),
        budget_windows.c.window_start == sa.bindparam("r_start", type_=_WINDOW_START),
        _fits,
    )
    .values(reserved_usd=budget_windows.c.reserved_usd + sa.bindparam("r_amount", type_=sa.Float))
    .returning(budget_windows.c.spent_usd, budget_windows.c.reserved_usd)
)
# Releases a reservation and records the real cost; one row per budget held.
SETTLE = (
    budget_windows.update()
    .where(
        budget_windows.c.budget_id == sa.bindparam("s_budget"),
        budget_windows.c.window_start == _SETTLE_START,
    )
    .values(
        reserved_usd=budget_windows.c.reserved_usd - sa.bindparam("s_amount", type_=sa.Float),
        spent_usd=budget_windows.c.spent_usd + sa.bindparam("s_cost", type_=sa.Float),
    )
)


def settlements(held: list[tuple[str, datetime, float]], cost: float) -> list[dict[str, Any]]:
    """SETTLE's parameters for a reservation settled at `cost`."""
    return [
        {"s_budget": budget_id, "s_start": start, "s_amount": amount, "s_cost": cost}
        for budget_id, start, amount in held
    ]


def reserve_in(
    conn: sa.Connection,
    applying: tuple[Budget, ...],
    amount: float,
    *,
    now: datetime | None = None,
) -> Reservation:
    """Hold `amount` against each of `applying` in `conn`'s transaction, or raise
    BudgetExceeded having released what it held here, so the transaction may go on and
    commit others' writes (group commit). Synchronous, so a whole transaction can run in
    one thread (store/group_commit.py); `AsyncConnection.run_sync` runs it elsewhere."""
    reservation = Reservation()
    now = now or datetime.now(UTC)
    for budget in applying:
        start = window_start(budget.period, now)
        params = {"r_budget": budget.id, "r_start": start, "r_amount": amount}
        row = conn.execute(RESERVE, params).first()
        if row is None:
            # The window's first reservation (its row is made here), or a refusal.
            _ensure_window(conn, budget.id, start)
            row = conn.execute(RESERVE, params).first()
        if row is None:
            spent, reserved, current = _levels(conn, budget.id, start)
            if current is None:
                continue  # deleted since it was cached: nothing to hold
            if reservation.held:
                conn.execute(SETTLE, settlements(reservation.held, 0.0))
            raise BudgetExceeded(
                f"the {describe(current)} cannot take this generation "
                f"(estimated ${amount:.4f}; spent ${spent:.4f}, "
                f"${reserved:.4f} reserved by running generations)",
                budget=budget_body(current, start, spent, reserved),
            )
        reservation.held.append((budget.id, start, amount))
        if float(row.spent_usd) + float(row.reserved_usd) > budget.limit_usd:
            reservation.warnings.append(
                f"over the {describe(budget)}: ${float(row.spent_usd):.4f} spent"
            )
    return reservation


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


def lock_windows(conn: sa.Connection, windows: list[tuple[str, datetime]]) -> None:
    """Make and lock `windows` (budget id, window start) in one global order: a transaction
    that touches several budget windows takes them this way first, so two of them (on any
    replicas) never each hold one the other waits for."""
    for budget_id, start in sorted(set(windows)):
        _ensure_window(conn, budget_id, start)
        conn.execute(
            sa.select(budget_windows.c.budget_id)
            .where(budget_windows.c.budget_id == budget_id, budget_windows.c.window_start == start)
            .with_for_update()
        )


def _ensure_window(conn: sa.Connection, budget_id: str, start: datetime) -> None:
    # From the budget's row, so a budget deleted since it was cached makes no window.
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    source = sa.select(
        budgets.c.id,
        sa.literal(start, type_=budget_windows.c.window_start.type),
        sa.literal(0.0),
        sa.literal(0.0),
    ).where(budgets.c.id == budget_id)
    conn.execute(
        dialect.insert(budget_windows)
        .from_select(["budget_id", "window_start", "spent_usd", "reserved_usd"], source)
        .on_conflict_do_nothing()
    )


def _levels(
    conn: sa.Connection, budget_id: str, start: datetime
) -> tuple[float, float, Budget | None]:
    """A window's spent and reserved amounts, and its budget as it is now (None when
    deleted)."""
    row = conn.execute(
        sa.select(budget_windows.c.spent_usd, budget_windows.c.reserved_usd).where(
            budget_windows.c.budget_id == budget_id, budget_windows.c.window_start == start
        )
    ).first()
    current = conn.execute(sa.select(budgets).where(budgets.c.id == budget_id)).first()
    spent, reserved = (float(row[0]), float(row[1])) if row else (0.0, 0.0)
    return spent, reserved, None if current is None else _budget(current)
