"""Rating cases: one customer, plan and meter with a price book and a period's usage, from the
worked examples of docs/pricing.md or generated at random, and what the Python reference says
each day costs."""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import ROUND_DOWN, Decimal
from pathlib import Path

from pricing.charges import UsageDay, billable_units, daily_amounts, period_amount
from pricing.price_book import PriceBook, price_book_from_rows, read_csv_text

CHARGE_COLUMNS = [
    "plan_id",
    "meter_id",
    "effective_from",
    "currency",
    "charge_model",
    "included_units",
    "unit_price_minor",
    "package_size_units",
    "package_price_minor",
    "percentage_rate",
    "fixed_fee_minor",
]


@dataclass(frozen=True)
class UsageRow:
    usage_date: date
    used_units: int
    event_count: int


@dataclass(frozen=True)
class ExpectedDay:
    """A row of a worked example's table: every figure of the day's rating."""

    usage_date: date
    used_units: int
    event_count: int
    period_to_date_units: int
    billable_units: int
    period_to_date_amount_minor: Decimal
    amount_minor: Decimal


@dataclass(frozen=True)
class InvoiceTerms:
    """What a case's invoices hold besides its usage line: the plan's minimum spend, fee lines
    (as subscription_fee_lines gives them) and credit applied to the usage (as the ledger step
    records it), so that the invoice marts can be checked on random cases too."""

    minimum_spend_minor: Decimal  # 0: no minimum
    # (billing period start, line type, exact amount): flat fees and prorations.
    fee_lines: tuple[tuple[date, str, Decimal], ...]
    # (usage date, exact amount) per application; returns of credit are negative.
    credit_applications: tuple[tuple[date, Decimal], ...]


@dataclass
class Case:
    name: str
    charge_rows: list[dict[str, str]]
    tier_rows: list[dict[str, str]]
    usage: list[UsageRow]
    expected: list[ExpectedDay] = field(default_factory=list)
    invoice: InvoiceTerms | None = None

    @property
    def plan_meter(self) -> tuple[str, str]:
        (key,) = {(row["plan_id"], row["meter_id"]) for row in self.charge_rows}
        return key

    def price_book(self) -> PriceBook:
        return price_book_from_rows(self.charge_rows, self.tier_rows)


@dataclass(frozen=True)
class ReferenceDay:
    usage_date: date
    period_to_date_units: int
    billable_units: int
    period_to_date_amount_minor: Decimal
    amount_minor: Decimal


def reference_rating(case: Case) -> list[ReferenceDay]:
    """Every usage day of the case rated by pricing.charges, period by period (calendar months)."""
    book = case.price_book()
    plan_id, meter_id = case.plan_meter
    rows = sorted(case.usage, key=lambda row: row.usage_date)
    rated: list[ReferenceDay] = []
    periods = sorted({row.usage_date.replace(day=1) for row in rows})
    for period in periods:
        days = [row for row in rows if row.usage_date.replace(day=1) == period]
        charges = []
        for row in days:
            dated = book.charge_on(plan_id=plan_id, meter_id=meter_id, day=row.usage_date)
            assert dated is not None, f"{case.name}: no charge on {row.usage_date}"
            charges.append(dated.charge)
        amounts = daily_amounts(
            [
                UsageDay(used_units=row.used_units, charge=charge, event_count=row.event_count)
                for row, charge in zip(days, charges, strict=True)
            ]
        )
        used = events = 0
        for row, charge, amount in zip(days, charges, amounts, strict=True):
            used += row.used_units
            events += row.event_count
            rated.append(
                ReferenceDay(
                    usage_date=row.usage_date,
                    period_to_date_units=used,
                    billable_units=billable_units(charge, used),
                    period_to_date_amount_minor=period_amount(
                        charge, used_units=used, event_count=events
                    ),
                    amount_minor=amount,
                )
            )
    return rated


# --- the worked examples of docs/pricing.md -------------------------------------------------

DOC_PATH = Path(__file__).resolve().parents[2] / "docs" / "pricing.md"
_CSV_BLOCK = re.compile(r"```csv (price_book_charges|price_book_charge_tiers)\n(.*?)```", re.S)


def _number(text: str) -> Decimal:
    return Decimal(text.replace(",", "").strip())


def _tables(section: str, first_header: str) -> list[list[list[str]]]:
    tables, current = [], None
    for line in section.splitlines():
        if line.startswith("|"):
            cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
            if current is None:
                current = [cells] if cells[0] == first_header else []
            elif current and not set(line) <= set("|-: "):
                current.append(cells)
        else:
            if current:
                tables.append(current)
            current = None
    if current:
        tables.append(current)
    return tables


def doc_sections() -> dict[str, str]:
    text = DOC_PATH.read_text()
    examples = text.split("## Worked examples", 1)[1].split("\n## ", 1)[0]
    sections = {}
    for chunk in examples.split("\n### ")[1:]:
        title, _, body = chunk.partition("\n")
        sections[title.strip()] = body
    return sections


def doc_cases() -> list[Case]:
    """One case per usage table of each worked example, with the table's figures expected."""
    cases = []
    for title, body in doc_sections().items():
        blocks = {name: read_csv_text(rows) for name, rows in _CSV_BLOCK.findall(body)}
        if "price_book_charges" not in blocks:
            continue
        for number, table in enumerate(_tables(body, "day")):
            header, *rows = table
            assert header == [
                "day",
                "used",
                "events",
                "period to date",
                "billable",
                "through the day",
                "day's amount",
            ], (title, header)
            expected = [
                ExpectedDay(
                    usage_date=date.fromisoformat(row[0]),
                    used_units=int(_number(row[1])),
                    event_count=int(_number(row[2])),
                    period_to_date_units=int(_number(row[3])),
                    billable_units=int(_number(row[4])),
                    period_to_date_amount_minor=_number(row[5]),
                    amount_minor=_number(row[6]),
                )
                for row in rows
            ]
            cases.append(
                Case(
                    name=f"{title} #{number + 1}",
                    charge_rows=blocks["price_book_charges"],
                    tier_rows=blocks.get("price_book_charge_tiers", []),
                    usage=[UsageRow(e.usage_date, e.used_units, e.event_count) for e in expected],
                    expected=expected,
                )
            )
    return cases


def doc_minimum_rows() -> list[tuple[Decimal, Decimal, Decimal]]:
    (table,) = _tables(doc_sections()["Minimum spend"], "minimum")
    return [(_number(a), _number(b), _number(c)) for a, b, c in table[1:]]


# --- random cases -----------------------------------------------------------------------------

MODELS = ("per_unit", "graduated", "volume", "package", "percentage")


def _price(rng: random.Random) -> str:
    """Sub-cent to whole-cent prices with up to 12 decimal places, sometimes zero."""
    if rng.random() < 0.1:
        return "0"
    places = rng.choice([0, 2, 6, 12])
    return str(Decimal(rng.randint(1, 10**6)).scaleb(-places))


def _charge_row(rng: random.Random, plan: str, meter: str, effective_from: date) -> dict:
    model = rng.choice(MODELS)
    row = dict.fromkeys(CHARGE_COLUMNS, "")
    row.update(
        plan_id=plan,
        meter_id=meter,
        effective_from=effective_from.isoformat(),
        currency="usd",
        charge_model=model,
        included_units="0"
        if model == "percentage" or rng.random() < 0.5
        else str(rng.choice([1, 10, 1000, rng.randint(1, 50_000)])),
    )
    if model == "per_unit":
        row["unit_price_minor"] = _price(rng)
    elif model == "package":
        row["package_size_units"] = str(rng.choice([1, 7, 1000, rng.randint(1, 100_000)]))
        row["package_price_minor"] = _price(rng)
    elif model == "percentage":
        row["percentage_rate"] = str(Decimal(rng.randint(0, 10**6)).scaleb(-7))
        row["fixed_fee_minor"] = _price(rng)
    return row


def _tier_rows(rng: random.Random, charge: dict) -> list[dict[str, str]]:
    bounds = sorted(rng.sample(range(1, 200_000), rng.randint(0, 3)))
    rows = []
    for bound in [*bounds, None]:
        rows.append(
            {
                "plan_id": charge["plan_id"],
                "meter_id": charge["meter_id"],
                "effective_from": charge["effective_from"],
                "up_to_units": "" if bound is None else str(bound),
                "unit_price_minor": _price(rng),
                "flat_fee_minor": "0" if rng.random() < 0.5 else _price(rng),
            }
        )
    return rows


def random_case(rng: random.Random, number: int) -> Case:
    plan, meter = f"plan_{number}", f"meter_{number}"
    first_day = date(2026, 9, 1) + timedelta(days=rng.randint(0, 70))
    charge_dates = [date(2025, 1, 1)]
    if rng.random() < 0.4:  # a new charge from a day inside the usage
        charge_dates.append(first_day + timedelta(days=rng.randint(1, 40)))
    charge_rows, tier_rows = [], []
    for effective_from in charge_dates:
        row = _charge_row(rng, plan, meter, effective_from)
        charge_rows.append(row)
        if row["charge_model"] in ("graduated", "volume"):
            tier_rows.extend(_tier_rows(rng, row))
    days = sorted(rng.sample(range(60), rng.randint(1, 25)))
    scale = rng.choice([10, 1000, 100_000])
    usage = [
        UsageRow(
            usage_date=first_day + timedelta(days=offset),
            used_units=0 if rng.random() < 0.05 else rng.randint(1, scale),
            event_count=rng.randint(1, 50),
        )
        for offset in days
    ]
    return Case(name=f"random_{number}", charge_rows=charge_rows, tier_rows=tier_rows, usage=usage)


def random_invoice_terms(rng: random.Random, case: Case) -> InvoiceTerms:
    """A minimum spend half the time, zero to three fee lines a period, and credit applied to a
    share (none to all) of each period's rated usage, some of it returned again."""
    periods: dict[date, list[ReferenceDay]] = {}
    for day in reference_rating(case):
        periods.setdefault(day.usage_date.replace(day=1), []).append(day)
    fee_lines = []
    credit_applications = []
    for period_start, days in periods.items():
        for line_type in rng.sample(["flat_fee", "proration_charge", "proration_credit"], 2):
            if rng.random() < 0.5:
                amount = Decimal(rng.randint(1, 10**14)).scaleb(-12)  # up to 100.00, 12 places
                fee_lines.append(
                    (
                        period_start,
                        line_type,
                        -amount if line_type == "proration_credit" else amount,
                    )
                )
        usage_exact = sum((day.amount_minor for day in days), Decimal(0))
        share = Decimal(rng.choice([0, 1, 3, 8])) / 8
        credit = (usage_exact * share).quantize(Decimal("1e-12"), rounding=ROUND_DOWN)
        if credit > 0:
            first = (credit * Decimal(rng.randint(0, 100)) / 100).quantize(
                Decimal("1e-12"), rounding=ROUND_DOWN
            )
            returned = Decimal(rng.randint(0, 500)).scaleb(-2)
            credit_applications += [
                (days[0].usage_date, first + returned),
                (days[-1].usage_date, credit - first),
                (days[-1].usage_date, -returned),
            ]
    minimum = Decimal(rng.randint(1, 10**8)).scaleb(-2) if rng.random() < 0.5 else Decimal(0)
    return InvoiceTerms(
        minimum_spend_minor=minimum,
        fee_lines=tuple(fee_lines),
        credit_applications=tuple(credit_applications),
    )


def random_cases(seed: int, count: int) -> list[Case]:
    rng = random.Random(seed)
    cases = [random_case(rng, number) for number in range(count)]
    # Its own stream, so that adding invoice terms left the cases' price books and usage as
    # they were.
    invoice_rng = random.Random(f"{seed}:invoices")
    for case in cases:
        case.invoice = random_invoice_terms(invoice_rng, case)
    return cases
