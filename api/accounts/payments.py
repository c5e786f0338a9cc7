"""Where credits come from: a payment provider turns a payment into a ledger top-up.

Providers implement `PaymentProvider`. LlamaGate ships `OperatorGrants`: no card payments; an
operator grants credits (`llamagate credits grant`, or the admin API). A card processor adapter
(Stripe Checkout, say) would implement `checkout_url` and verify its webhook's signature in
`handle_webhook` before calling `record_payment`.
"""

from __future__ import annotations

from typing import Optional, Protocol

from api.accounts import credits
from api.store.db import Database


class PaymentProvider(Protocol):
    name: str

    def checkout_url(self, user_id: int, amount_micros: int) -> Optional[str]:
        """Where to send a user to pay, or None when this provider takes no payments online."""

    def handle_webhook(self, payload: bytes, headers: dict[str, str]) -> None:
        """Verify and apply a provider's notification of a completed payment."""


class OperatorGrants:
    name = "operator"

    def __init__(self, db: Database):
        self.db = db

    def checkout_url(self, user_id: int, amount_micros: int) -> Optional[str]:
        return None

    def handle_webhook(self, payload: bytes, headers: dict[str, str]) -> None:
        raise NotImplementedError("operator grants have no webhook")

    def grant(self, user_id: int, amount_micros: int, note: str) -> int:
        return record_payment(self.db, user_id, amount_micros, note, kind="grant")


def record_payment(db: Database, user_id: int, amount_micros: int, note: str, kind: str = "top_up") -> int:
    """Credit a payment to the ledger; returns the new balance."""
    return credits.grant_credits(db, user_id, amount_micros, note=note, kind=kind)
