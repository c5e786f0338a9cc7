"""How the website writes money, prices, counts and times."""

from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal
from typing import Optional

from flask import Flask

from api.accounts.money import MICROS_PER_DOLLAR


def usd(micros: int) -> str:
    """Micro-dollars as dollars with cents, and more places only where they carry something:
    5_000_000 -> '$5.00', 4_999_996 -> '$4.999996', -120 -> '-$0.00012'."""
    sign = "-" if micros < 0 else ""
    dollars = Decimal(abs(micros)) / MICROS_PER_DOLLAR
    text = f"{dollars:.6f}".rstrip("0")
    whole, _, cents = text.partition(".")
    return f"{sign}${int(whole):,}.{cents.ljust(2, '0')}"


def count(value: int) -> str:
    return f"{value:,}"


def utc_time(value: Optional[datetime]) -> str:
    """'2026-11-25 09:30 UTC', or a dash for never."""
    if value is None:
        return "—"
    return value.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def short_time(value: Optional[datetime]) -> str:
    """'Nov 25, 09:30' (UTC), for table rows under a heading that says UTC."""
    if value is None:
        return "—"
    value = value.astimezone(timezone.utc)
    return f"{value:%b} {value.day}, {value:%H:%M}"


def iso_time(value: Optional[datetime]) -> str:
    return value.astimezone(timezone.utc).isoformat(timespec="seconds") if value else ""


def register(app: Flask) -> None:
    for name, function in {"usd": usd, "count": count, "utc_time": utc_time, "short_time": short_time,
                           "iso_time": iso_time}.items():
        app.add_template_filter(function, name)
