"""Prepaid credits: grants, reservations at admission, settlement from real usage.

A request reserves its worst-case cost when it is admitted (prompt tokens plus `n × max_tokens`
completion tokens at the model's prices), in one conditional UPDATE that only succeeds while the
balance minus open reservations covers it. So concurrent requests can never spend more than the
balance: the balance never goes below zero. Settlement charges the real usage and drops the
reservation in one transaction; deleting the reservation row is the guard that makes a second
settlement of the same request a no-op, and the ledger's unique request id is a second one.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Optional

from sqlalchemy import bindparam, delete, insert, select, update
from sqlalchemy.orm import Session

from api.accounts.api_keys import touch_last_used
from api.store.db import Database
from api.store.models import LedgerEntry, Reservation, UsageRecord, User, utcnow
from shared.errors import InsufficientCreditsError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0


@dataclass(frozen=True)
class Balance:
    balance_micros: int
    reserved_micros: int

    @property
    def available_micros(self) -> int:
        return self.balance_micros - self.reserved_micros


def grant_credits(db: Database, user_id: int, amount_micros: int, note: str = "", kind: str = "grant") -> int:
    """Add credits (a grant by an operator, or a paid top-up); returns the new balance."""
    if amount_micros <= 0:
        raise ValueError("a grant must be a positive amount")
    with db.transaction() as session:
        return append_entry(session, user_id, amount_micros, kind, note=note)


def get_balance(db: Database, user_id: int) -> Balance:
    with db.transaction() as session:
        row = session.execute(select(User.balance_micros, User.reserved_micros).where(User.id == user_id)).one()
        return Balance(row.balance_micros, row.reserved_micros)


def ledger_entries(db: Database, user_id: int, limit: int = 50) -> list[LedgerEntry]:
    with db.transaction() as session:
        return list(session.scalars(select(LedgerEntry).where(LedgerEntry.user_id == user_id)
                                    .order_by(LedgerEntry.id.desc()).limit(limit)))


# Built once: these run on every API request, and building a statement costs more CPU than
# running it on SQLite.
_HOLD = (update(User).where(User.id == bindparam("user_id"),
                            User.balance_micros - User.reserved_micros >= bindparam("amount"))
         .values(reserved_micros=User.reserved_micros + bindparam("amount")))
_TAKE_RESERVATION = (delete(Reservation).where(Reservation.request_id == bindparam("request_id"))
                     .returning(Reservation.user_id, Reservation.api_key_id, Reservation.model,
                                Reservation.amount_micros))
_CHARGE = (update(User).where(User.id == bindparam("user_id"))
           .values(reserved_micros=User.reserved_micros - bindparam("reserved"),
                   balance_micros=User.balance_micros - bindparam("cost"))
           .returning(User.balance_micros))
_ADD_RESERVATION, _ADD_LEDGER_ENTRY, _ADD_USAGE_RECORD = insert(Reservation), insert(LedgerEntry), insert(UsageRecord)


def reserve(db: Database, *, request_id: str, user_id: int, api_key_id: Optional[int], model: str,
            amount_micros: int, expires_in: float) -> None:
    """Hold `amount_micros` of the user's credit for a request, or raise InsufficientCreditsError."""
    now = utcnow()
    with db.connection() as connection:
        if connection.execute(_HOLD, {"user_id": user_id, "amount": amount_micros}).rowcount != 1:
            raise InsufficientCreditsError(
                "You exceeded your current quota: your credit balance cannot cover this request "
                f"(up to ${amount_micros / 1_000_000:.6f}). Add credits, or lower max_tokens.")
        connection.execute(_ADD_RESERVATION, {
            "request_id": request_id, "user_id": user_id, "api_key_id": api_key_id, "model": model,
            "amount_micros": amount_micros, "created_at": now, "expires_at": now + timedelta(seconds=expires_in)})


def settle(db: Database, *, request_id: str, usage: Usage, cost_micros: int, endpoint: str, status: str,
           latency_ms: int) -> bool:
    """Charge a request's real cost and release its reservation; False if it was already settled."""
    now = utcnow()
    with db.connection() as connection:
        # Whoever deletes the reservation settles; a second settler finds nothing to delete.
        reservation = connection.execute(_TAKE_RESERVATION, {"request_id": request_id}).first()
        if reservation is None:
            return False
        balance = connection.execute(_CHARGE, {"user_id": reservation.user_id, "cost": cost_micros,
                                               "reserved": reservation.amount_micros}).scalar_one()
        if cost_micros > 0:
            connection.execute(_ADD_LEDGER_ENTRY, {
                "user_id": reservation.user_id, "amount_micros": -cost_micros, "balance_after_micros": balance,
                "kind": "usage", "request_id": request_id, "created_at": now,
                "note": f"{reservation.model}: {usage.prompt_tokens} prompt + {usage.completion_tokens} "
                        "completion tokens"})
        connection.execute(_ADD_USAGE_RECORD, {
            "request_id": request_id, "user_id": reservation.user_id, "api_key_id": reservation.api_key_id,
            "model": reservation.model, "endpoint": endpoint, "prompt_tokens": usage.prompt_tokens,
            "completion_tokens": usage.completion_tokens, "cost_micros": cost_micros, "status": status[:40],
            "latency_ms": latency_ms, "created_at": now})
        if reservation.api_key_id is not None:
            touch_last_used(connection, reservation.api_key_id, now)
    if cost_micros > reservation.amount_micros:
        log.error("a request cost more than its reservation", extra={
            "request_id": request_id, "cost_micros": cost_micros, "reserved_micros": reservation.amount_micros})
    return True


def expired_reservations(db: Database, now: Optional[datetime] = None, limit: int = 100) -> list[str]:
    """Request ids whose reservations outlived any possible job (their web process died)."""
    with db.transaction() as session:
        return list(session.scalars(select(Reservation.request_id)
                                    .where(Reservation.expires_at < (now or utcnow())).limit(limit)))


def append_entry(session: Session, user_id: int, amount_micros: int, kind: str, *, note: str = "",
                 request_id: Optional[str] = None) -> int:
    """Append a ledger entry and move the balance with it, in the caller's transaction."""
    balance = session.scalar(update(User).where(User.id == user_id)
                             .values(balance_micros=User.balance_micros + amount_micros)
                             .returning(User.balance_micros))
    if balance is None:
        raise LookupError(f"no user with id {user_id}")
    session.add(LedgerEntry(user_id=user_id, amount_micros=amount_micros, balance_after_micros=balance,
                            kind=kind, request_id=request_id, note=note, created_at=utcnow()))
    return balance
