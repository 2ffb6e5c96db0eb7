"""Exact money for people: minor units (``Decimal``) to strings like ``$1,234.56``.

The warehouse keeps amounts in minor units with sub-cent precision; finance reads major units.
Dividing by a power of ten with ``scaleb`` is exact, so nothing is rounded on the way to the page:
whole-cent amounts show two decimals, exact sub-cent amounts show every digit they have.
"""

from __future__ import annotations

from decimal import Decimal

# Currencies whose minor unit is the major unit (Stripe's zero-decimal list, the common ones).
ZERO_DECIMAL_CURRENCIES = frozenset({"jpy", "krw", "vnd", "clp", "pyg", "xaf", "xof", "ugx"})
SYMBOLS = {"usd": "$", "eur": "€", "gbp": "£", "jpy": "¥"}


def minor_unit_exponent(currency: str) -> int:
    return 0 if currency.lower() in ZERO_DECIMAL_CURRENCIES else 2


def to_major_units(amount_minor: Decimal | int, currency: str) -> Decimal:
    """Exact: ``Decimal.scaleb`` moves the decimal point without rounding. Whole minor units
    come from the warehouse as integers (BIGINT), exact amounts as decimals."""
    return Decimal(amount_minor).scaleb(-minor_unit_exponent(currency))


def format_money(amount_minor: Decimal | int | None, currency: str) -> str:
    """``Decimal('123456')`` in usd → ``$1,234.56``; ``Decimal('12.5')`` → ``$0.125``."""
    if amount_minor is None:
        return "–"
    exponent = minor_unit_exponent(currency)
    major = to_major_units(amount_minor, currency)
    places = max(exponent, -major.normalize().as_tuple().exponent)  # type: ignore[operator]
    digits = f"{abs(major):,.{places}f}"
    sign = "-" if major < 0 else ""
    symbol = SYMBOLS.get(currency.lower())
    return f"{sign}{symbol}{digits}" if symbol else f"{sign}{currency.upper()} {digits}"


def plotted(amount_minor: Decimal | int, currency: str) -> float:
    """A float of major units, for a chart's axis only: never for sums or display."""
    return float(to_major_units(amount_minor, currency))
