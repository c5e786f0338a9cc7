"""Money as integer micro-dollars: parsed from and shown as dollar strings, never floats."""

from __future__ import annotations

from decimal import ROUND_DOWN, Decimal, InvalidOperation

MICROS_PER_DOLLAR = 1_000_000
MAX_DOLLARS = 10**9  # far above any real amount, far below what a 64-bit column holds in micros


def dollars_to_micros(text: str) -> int:
    """'5' or '5.25' or '$0.000001' -> micro-dollars; ValueError for anything else."""
    try:
        amount = Decimal(str(text).strip().lstrip("$"))
    except InvalidOperation:
        raise ValueError(f"not an amount of dollars: {text!r}") from None
    if not amount.is_finite() or abs(amount) > MAX_DOLLARS:
        raise ValueError(f"not an amount of dollars: {text!r}")
    micros = amount * MICROS_PER_DOLLAR
    if micros != micros.to_integral_value():
        raise ValueError(f"amounts are whole micro-dollars (6 decimal places at most): {text!r}")
    return int(micros)


def format_micros(micros: int, places: int = 6) -> str:
    """micro-dollars -> '$1.234567' (or '-$0.10'), truncated to `places` decimals."""
    sign = "-" if micros < 0 else ""
    dollars = (Decimal(abs(micros)) / MICROS_PER_DOLLAR).quantize(Decimal(1).scaleb(-places), rounding=ROUND_DOWN)
    return f"{sign}${dollars}"
