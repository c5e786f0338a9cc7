"""Reading the usage log: recent requests and totals per day, for the dashboard and the CLI."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone

from sqlalchemy import select

from api.store.db import Database
from api.store.models import UsageRecord


@dataclass(frozen=True)
class DailyUsage:
    day: date
    requests: int
    tokens: int
    cost_micros: int


def recent_requests(db: Database, user_id: int, limit: int = 20) -> list[UsageRecord]:
    with db.transaction() as session:
        return list(session.scalars(select(UsageRecord).where(UsageRecord.user_id == user_id)
                                    .order_by(UsageRecord.id.desc()).limit(limit)))


def daily_usage(db: Database, user_id: int, days: int = 14, today: date | None = None) -> list[DailyUsage]:
    """One entry per day for the last `days` days (UTC), zeros included, oldest first."""
    today = today or datetime.now(timezone.utc).date()
    first = today - timedelta(days=days - 1)
    since = datetime(first.year, first.month, first.day, tzinfo=timezone.utc)
    with db.transaction() as session:
        rows = session.execute(select(UsageRecord.created_at, UsageRecord.prompt_tokens,
                                      UsageRecord.completion_tokens, UsageRecord.cost_micros)
                               .where(UsageRecord.user_id == user_id, UsageRecord.created_at >= since)).all()
    totals = {first + timedelta(days=i): [0, 0, 0] for i in range(days)}
    for row in rows:  # summed here: day truncation differs between SQLite and PostgreSQL
        bucket = totals.get(row.created_at.astimezone(timezone.utc).date())
        if bucket is not None:
            bucket[0] += 1
            bucket[1] += row.prompt_tokens + row.completion_tokens
            bucket[2] += row.cost_micros
    return [DailyUsage(day, *values) for day, values in totals.items()]
