"""Flat-fee cases: a customer's subscriptions as the Stripe export stages them and the plans'
fees, from the worked examples of docs/pricing.md (*Flat fees and prorations*) or generated at
random, and the fee lines the Python reference (pricing.prorations) gives them."""

from __future__ import annotations

import csv
import io
import random
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

from pricing.periods import billing_period_at
from pricing.prorations import (
    ExportedSubscription,
    FeeLine,
    fee_lines,
    subscriptions_from_export,
)

DOC_PATH = Path(__file__).resolve().parents[2] / "docs" / "pricing.md"
_CSV_BLOCK = re.compile(r"```csv (price_book_plans|subscriptions)\n(.*?)```", re.S)
LINE_HEADER = [
    "subscription",
    "period",
    "line",
    "seconds",
    "period seconds",
    "unit amount",
    "exact amount",
    "amount",
]


@dataclass(frozen=True)
class ExpectedLine:
    """A row of a worked example's table: one fee line with every figure."""

    subscription_id: str
    period: str  # the period's first day, YYYY-MM-DD
    line_type: str
    quantity_seconds: int
    period_seconds: int
    unit_amount_minor: int
    amount_minor_exact: Decimal
    amount_minor: int


@dataclass
class FeeCase:
    name: str
    fees: dict[str, int]
    subscriptions: list[ExportedSubscription]
    expected: list[ExpectedLine] = field(default_factory=list)


def reference_lines(case: FeeCase) -> list[FeeLine]:
    lines = [
        line
        for subscription in subscriptions_from_export(case.subscriptions, case.fees)
        for line in fee_lines(subscription)
    ]
    return sorted(lines, key=line_key)


def line_key(line: FeeLine) -> tuple[str, str, datetime, str]:
    return (line.customer_id, line.subscription_id, line.billing_period_start_at, line.line_type)


# --- the worked examples of docs/pricing.md -------------------------------------------------


def _timestamp(text: str) -> datetime | None:
    text = text.strip()
    return datetime.fromisoformat(text).astimezone(UTC) if text else None


def _number(text: str) -> Decimal:
    return Decimal(text.replace(",", "").strip())


def doc_fee_sections() -> dict[str, str]:
    text = DOC_PATH.read_text()
    section = text.split("## Flat fees and prorations", 1)[1].split("\n## ", 1)[0]
    return {
        title.strip(): body
        for title, _, body in (chunk.partition("\n") for chunk in section.split("\n### ")[1:])
    }


def _line_table(body: str) -> list[list[str]]:
    rows = [
        [cell.strip() for cell in line.strip().strip("|").split("|")]
        for line in body.splitlines()
        if line.startswith("|") and not set(line) <= set("|-: ")
    ]
    assert rows and rows[0] == LINE_HEADER, rows[:1]
    return rows[1:]


def doc_fee_cases() -> list[FeeCase]:
    """One case per worked example, with its table's lines expected."""
    cases = []
    for title, body in doc_fee_sections().items():
        blocks = {
            name: list(csv.DictReader(io.StringIO(rows))) for name, rows in _CSV_BLOCK.findall(body)
        }
        if "subscriptions" not in blocks:
            continue
        subscriptions = [
            ExportedSubscription(
                customer_id=row["customer_id"],
                subscription_id=row["subscription_id"],
                status=row["status"],
                plan_id=row["plan_id"],
                started_at=_timestamp(row["started_at"]),  # type: ignore[arg-type]
                ended_at=_timestamp(row["ended_at"]),
                current_period_start_at=_timestamp(row["current_period_start_at"]),
                current_period_end_at=_timestamp(row["current_period_end_at"]),
                billing_cycle_anchor_at=_timestamp(row.get("billing_cycle_anchor_at") or ""),
            )
            for row in blocks["subscriptions"]
        ]
        expected = [
            ExpectedLine(
                subscription_id=row[0],
                period=row[1],
                line_type=row[2],
                quantity_seconds=int(_number(row[3])),
                period_seconds=int(_number(row[4])),
                unit_amount_minor=int(_number(row[5])),
                amount_minor_exact=_number(row[6]),
                amount_minor=int(_number(row[7])),
            )
            for row in _line_table(body)
        ]
        fees = {row["plan_id"]: int(row["monthly_fee_minor"]) for row in blocks["price_book_plans"]}
        cases.append(FeeCase(name=title, fees=fees, subscriptions=subscriptions, expected=expected))
    return cases


def as_expected(line: FeeLine) -> ExpectedLine:
    return ExpectedLine(
        subscription_id=line.subscription_id,
        period=line.billing_period_start_at.strftime("%Y-%m-%d"),
        line_type=line.line_type,
        quantity_seconds=line.quantity_seconds,
        period_seconds=line.period_seconds,
        unit_amount_minor=line.unit_amount_minor,
        amount_minor_exact=line.amount_minor_exact,
        amount_minor=line.amount_minor,
    )


# --- random cases ---------------------------------------------------------------------------

_EPOCH = datetime(2026, 1, 1, tzinfo=UTC)
_DAY = 86_400


def _instant(
    rng: random.Random, after: datetime, *, max_days: int, anchor_day: int = 1
) -> datetime:
    """A second after ``after``; sometimes exactly a period start, to hit the boundaries."""
    moment = after + timedelta(seconds=rng.randint(1, max_days * _DAY))
    if rng.random() < 0.2:
        moment = billing_period_at(moment, anchor_day)[1]
    return moment


def random_fee_case(rng: random.Random, name: str) -> FeeCase:
    """A customer with one to three subscriptions in a row: plan changes at the second the next
    starts, cancellations with or without a new subscription later, a trial on the last one."""
    fees = {
        f"plan_{name}_{number}": rng.choice([0, 1, 999, 1000, 2000, 4999, rng.randint(1, 10**7)])
        for number in range(3)
    }
    # Half the customers have a billing-cycle anchor (a day of January 2026: 1-31), the rest
    # calendar months.
    anchor_at = (
        _EPOCH + timedelta(days=rng.randint(0, 30), seconds=rng.randint(0, _DAY - 1))
        if rng.random() < 0.5
        else None
    )
    anchor_day = anchor_at.day if anchor_at else 1
    export_at = _EPOCH + timedelta(days=400) + timedelta(seconds=rng.randint(0, 60 * _DAY))
    current_start, current_end = billing_period_at(export_at, anchor_day)
    customer = f"cus_{name}"
    started = _EPOCH + timedelta(seconds=rng.randint(0, 200 * _DAY))
    rows = []
    count = rng.randint(1, 3)
    for number in range(count):
        last = number == count - 1
        plan = rng.choice(sorted(fees))
        subscription_id = f"sub_{name}_{number}"
        if last and rng.random() < 0.3:
            trial_end = started + timedelta(seconds=rng.randint(1, 40 * _DAY))
            if rng.random() < 0.3:
                trial_end = billing_period_at(trial_end, anchor_day)[1]
            rows.append(
                ExportedSubscription(
                    customer,
                    subscription_id,
                    "trialing",
                    plan,
                    started,
                    None,
                    started,
                    trial_end,
                    anchor_at,
                )
            )
            break
        if last and rng.random() < 0.5:
            rows.append(
                ExportedSubscription(
                    customer,
                    subscription_id,
                    "active",
                    plan,
                    started,
                    None,
                    current_start,
                    current_end,
                    anchor_at,
                )
            )
            break
        ended = _instant(rng, started, max_days=120, anchor_day=anchor_day)
        period_start, period_end = billing_period_at(ended - timedelta(seconds=1), anchor_day)
        rows.append(
            ExportedSubscription(
                customer,
                subscription_id,
                "canceled",
                plan,
                started,
                ended,
                period_start,
                period_end,
                anchor_at,
            )
        )
        # The next subscription starts at the same second (a plan change) or later (a new one).
        started = (
            ended
            if rng.random() < 0.7
            else _instant(rng, ended, max_days=45, anchor_day=anchor_day)
        )
    return FeeCase(name=name, fees=fees, subscriptions=rows)


def random_fee_cases(seed: int, count: int) -> list[FeeCase]:
    rng = random.Random(seed)
    return [random_fee_case(rng, f"r{number:04d}") for number in range(count)]
