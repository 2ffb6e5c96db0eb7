"""Reads the price book (the dbt seeds ``price_book_charges.csv`` and
``price_book_charge_tiers.csv``) into ``Charge`` objects, checked, and finds the charge in force
on a day. The dbt models read the same files as seeds; this is for Python callers and tests."""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from pathlib import Path

from pricing.charges import Charge, Tier

CHARGES_FILE = "price_book_charges.csv"
TIERS_FILE = "price_book_charge_tiers.csv"

ChargeKey = tuple[str, str]  # plan_id, meter_id


@dataclass(frozen=True)
class DatedCharge:
    effective_from: date
    currency: str
    charge: Charge


@dataclass(frozen=True)
class PriceBook:
    """Every plan's charges per meter, each list ordered by effective date."""

    charges: Mapping[ChargeKey, tuple[DatedCharge, ...]]

    def charge_on(self, *, plan_id: str, meter_id: str, day: date) -> DatedCharge | None:
        """The charge with the latest effective date on or before ``day`` (None: unpriced)."""
        in_force = None
        for dated in self.charges.get((plan_id, meter_id), ()):
            if dated.effective_from <= day:
                in_force = dated
        return in_force


def _decimal(value: str) -> Decimal | None:
    return Decimal(value) if value.strip() else None


def _integer(value: str) -> int | None:
    return int(value) if value.strip() else None


def price_book_from_rows(
    charge_rows: Iterable[Mapping[str, str]], tier_rows: Iterable[Mapping[str, str]]
) -> PriceBook:
    """Charges and tiers as the seeds' CSV rows (strings) give them; raises on a bad charge."""
    tiers: dict[tuple[str, str, date], list[Tier]] = defaultdict(list)
    for row in tier_rows:
        key = (row["plan_id"], row["meter_id"], date.fromisoformat(row["effective_from"]))
        tiers[key].append(
            Tier(
                up_to_units=_integer(row["up_to_units"]),
                unit_price_minor=Decimal(row["unit_price_minor"]),
                flat_fee_minor=_decimal(row.get("flat_fee_minor", "")) or Decimal(0),
            )
        )
    charges: dict[ChargeKey, list[DatedCharge]] = defaultdict(list)
    for row in charge_rows:
        effective_from = date.fromisoformat(row["effective_from"])
        key = (row["plan_id"], row["meter_id"], effective_from)
        charge_tiers = sorted(tiers.pop(key, []), key=_tier_order)
        try:
            charge = Charge(
                charge_model=row["charge_model"],
                included_units=_integer(row["included_units"]) or 0,
                unit_price_minor=_decimal(row["unit_price_minor"]),
                package_size_units=_integer(row["package_size_units"]),
                package_price_minor=_decimal(row["package_price_minor"]),
                percentage_rate=_decimal(row["percentage_rate"]),
                fixed_fee_minor=_decimal(row["fixed_fee_minor"]),
                tiers=tuple(charge_tiers),
            )
        except ValueError as error:
            raise ValueError(
                f"{row['plan_id']}:{row['meter_id']} from {effective_from}: {error}"
            ) from error
        charges[(row["plan_id"], row["meter_id"])].append(
            DatedCharge(effective_from=effective_from, currency=row["currency"], charge=charge)
        )
    if tiers:
        orphans = ", ".join(f"{p}:{m} from {d}" for p, m, d in sorted(tiers))
        raise ValueError(f"Tiers without a tiered charge: {orphans}")
    for key, dated in charges.items():
        days = [d.effective_from for d in dated]
        if len(set(days)) != len(days):
            raise ValueError(f"{key[0]}:{key[1]} has two charges on one effective date")
    return PriceBook(
        charges={
            key: tuple(sorted(dated, key=lambda d: d.effective_from))
            for key, dated in charges.items()
        }
    )


def _tier_order(tier: Tier) -> tuple[bool, int]:
    return (tier.up_to_units is None, tier.up_to_units or 0)


def read_csv_text(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text.strip() + "\n")))


def load_price_book(directory: Path) -> PriceBook:
    """The price book in ``directory`` (the dbt project's seeds folder)."""
    return price_book_from_rows(
        read_csv_text((directory / CHARGES_FILE).read_text()),
        read_csv_text((directory / TIERS_FILE).read_text()),
    )
