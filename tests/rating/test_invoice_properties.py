"""Invoices of random price books and usage, as dbt builds them (`invoice_lines`,
`invoice_credits`), against what the Python reference rating says each line is worth.

Each random case also has a plan minimum (half of them), flat-fee and proration lines, and
credit applied to part of its usage (tests/rating/cases.py, `random_invoice_terms`). The
properties: every line's exact amount is the reference's; the invoice total is the sum of its
lines, each rounded on its own with the one rounding rule, and the rounding is visible line by
line; charges = credit applied + amount due, with nothing ever due below zero. The same
properties are checked on examples hypothesis draws, by running the compiled SQL of the
invoice models on each (the last test).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import ROUND_DOWN, Decimal

import duckdb
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pricing.charges import Charge, UsageDay, daily_amounts, minimum_top_up
from pricing.prorations import round_to_minor_units
from tests.rating.cases import Case, reference_rating
from tests.rating.dbt_harness import INPUT_TABLES, RatingBuild, write_tables
from tests.rating.test_charge_properties import charges, usage_days

Line = tuple[str, Decimal]  # (line type, exact amount)


def rated_periods(cases: list[Case]) -> list[date]:
    """The (calendar-month) periods the warehouse invoices: all those from the first to the last
    rated day of any case (customer_billing_periods)."""
    days = [row.usage_date for case in cases for row in case.usage]
    month, last = min(days).replace(day=1), max(days)
    periods = []
    while month <= last:
        periods.append(month)
        month = (month + timedelta(days=31)).replace(day=1)
    return periods


def reference_invoices(case: Case, periods: list[date]) -> dict[date, list[Line]]:
    """Per billing period: the case's invoice lines as the reference prices them. A period
    without usage has an invoice only if the plan's minimum is owed in full."""
    assert case.invoice is not None
    usage: dict[date, Decimal] = {}
    for day in reference_rating(case):
        period_start = day.usage_date.replace(day=1)
        usage[period_start] = usage.get(period_start, Decimal(0)) + day.amount_minor
    invoices: dict[date, list[Line]] = {}
    for period_start in periods:
        usage_exact = usage.get(period_start)
        lines: list[Line] = [] if usage_exact is None else [("usage", usage_exact)]
        usage_exact = usage_exact or Decimal(0)
        lines += [
            (kind, amount)
            for start, kind, amount in case.invoice.fee_lines
            if start == period_start
        ]
        if case.invoice.minimum_spend_minor > 0:
            top_up = minimum_top_up(
                minimum_spend_minor=case.invoice.minimum_spend_minor,
                usage_amount_minor=usage_exact,
            )
            if top_up > 0:
                lines.append(("minimum_top_up", top_up))
        if lines:
            invoices[period_start] = sorted(lines)
    return invoices


def test_invoice_lines_are_the_reference_lines_and_the_total_is_their_rounded_sum(
    all_cases: list[Case], dbt_build: RatingBuild
) -> None:
    random_cases = [case for case in all_cases if case.invoice is not None]
    assert len(random_cases) >= 100
    periods = rated_periods(all_cases)
    seen_line_types: set[str] = set()
    differences = []
    for case in random_cases:
        built: dict[date, list] = defaultdict(list)
        for row in dbt_build.invoice_lines[case.name]:
            built[row.billing_period_start_date].append(row)
        expected = reference_invoices(case, periods)
        assert set(built) == set(expected), case.name
        for period_start, lines in expected.items():
            rows = sorted(
                built[period_start], key=lambda row: (row.line_type, row.amount_minor_exact)
            )
            actual = [(row.line_type, row.amount_minor_exact) for row in rows]
            if actual != lines:
                differences.append((case.name, period_start, lines, actual))
                continue
            seen_line_types.update(kind for kind, _ in lines)
            # Each line rounded on its own, half away from zero, its rounding beside it.
            for row in rows:
                assert row.amount_minor == round_to_minor_units(row.amount_minor_exact)
                assert row.rounding_minor == row.amount_minor - row.amount_minor_exact
            # The invoice total is the sum of its lines; it differs from the exact sum by the
            # lines' roundings (what the ledger posts to its rounding account), each under half
            # a minor unit.
            total = sum(row.amount_minor for row in rows)
            assert total == sum(round_to_minor_units(amount) for _, amount in lines)
            exact_total = sum((amount for _, amount in lines), Decimal(0))
            rounding = sum((row.rounding_minor for row in rows), Decimal(0))
            assert total == exact_total + rounding
            assert abs(rounding) <= Decimal(len(rows)) / 2
    assert not differences[:3], f"{len(differences)} invoices differ; first: {differences[:1]}"
    assert seen_line_types == {
        "usage",
        "flat_fee",
        "proration_charge",
        "proration_credit",
        "minimum_top_up",
    }


def test_charges_are_credit_applied_plus_amount_due_and_nothing_is_due_below_zero(
    all_cases: list[Case], dbt_build: RatingBuild
) -> None:
    credited_lines = 0
    for case in (case for case in all_cases if case.invoice is not None):
        assert case.invoice is not None
        applied: dict[date, Decimal] = defaultdict(Decimal)
        for usage_date, amount in case.invoice.credit_applications:
            applied[usage_date.replace(day=1)] += amount
        usage_lines = {
            row.billing_period_start_date: row
            for row in dbt_build.invoice_lines[case.name]
            if row.line_type == "usage"
        }
        rows = dbt_build.invoice_credits[case.name]
        assert {row.billing_period_start_date for row in rows} == set(usage_lines), case.name
        for row in rows:
            line = usage_lines[row.billing_period_start_date]
            assert row.usage_amount_minor == line.amount_minor
            assert row.credit_applied_minor_exact == applied[row.billing_period_start_date]
            assert row.credit_applied_minor == round_to_minor_units(row.credit_applied_minor_exact)
            assert row.usage_amount_minor == row.credit_applied_minor + row.amount_due_minor
            assert row.amount_due_minor >= 0
            credited_lines += row.credit_applied_minor_exact > 0
        # Per invoice too: what it charges for usage = credit applied + what is left to pay.
        assert sum(row.usage_amount_minor for row in rows) == sum(
            row.credit_applied_minor + row.amount_due_minor for row in rows
        )
    assert credited_lines >= 50


# --- hypothesis, on the compiled SQL of the invoice models ------------------------------------
#
# The same properties on price books, usage, fees, minimums and credit drawn by hypothesis: the
# SQL dbt compiled for `minimum_spend_period`, `invoice_lines` and `invoice_credits` in the build
# above runs on each example's rows in an in-memory DuckDB (milliseconds, where a dbt build takes
# seconds), with the Python reference's daily amounts as `billable_usage_daily`.

PERIOD = date(2026, 10, 1)
PERIOD_END = date(2026, 11, 1)
INVOICE_INPUTS = {
    "billable_usage_daily": (
        "customer_id varchar, meter_id varchar, plan_id varchar, usage_date date, "
        "billing_period_start_date date, currency varchar, quantity_units hugeint, "
        "amount_minor_exact decimal(38, 12), is_priced boolean"
    ),
    "customer_billing_periods": (
        "customer_id varchar, billing_period_start_date date, billing_period_end_date date, "
        "billing_anchor_day integer"
    ),
    **{
        name: INPUT_TABLES[name]
        for name in (
            "int_customer_plan_days",
            "price_book_plans",
            "subscription_fee_lines",
            "stg_billing__credit_applications",
        )
    },
}


@dataclass(frozen=True)
class MeterUsage:
    meter_id: str
    charge: Charge
    days: list[tuple[int, int]]  # (units, events) per day from the 1st


@dataclass(frozen=True)
class CustomerInvoice:
    customer_id: str
    meters: list[MeterUsage]
    minimum_spend_minor: Decimal
    fee_lines: list[tuple[str, Decimal]]
    credit_shares: list[Decimal]  # per meter: the share of its usage paid by credit

    def daily_amounts(self, meter: MeterUsage) -> list[Decimal]:
        return daily_amounts(
            [UsageDay(used_units=u, charge=meter.charge, event_count=e) for u, e in meter.days]
        )


exact_amounts = st.decimals(min_value=0, max_value=10**6, places=12, allow_nan=False)


@st.composite
def customer_invoices(draw: st.DrawFn, number: int) -> CustomerInvoice:
    meter_count = draw(st.integers(min_value=1, max_value=3))
    meters = [
        MeterUsage(f"m{index}", draw(charges()), draw(usage_days.map(lambda days: days[:28])))
        for index in range(meter_count)
    ]
    fee_lines = [
        (kind, -amount if kind == "proration_credit" else amount)
        for kind, amount in draw(
            st.lists(
                st.tuples(
                    st.sampled_from(["flat_fee", "proration_charge", "proration_credit"]),
                    exact_amounts.filter(lambda amount: amount > 0),
                ),
                max_size=3,
                unique_by=lambda line: line[0],
            )
        )
    ]
    return CustomerInvoice(
        customer_id=f"cus_{number}",
        meters=meters,
        minimum_spend_minor=draw(st.one_of(st.just(Decimal(0)), exact_amounts)),
        fee_lines=fee_lines,
        credit_shares=[
            draw(st.decimals(min_value=0, max_value=1, places=4)) for _ in range(meter_count)
        ],
    )


def _invoice_tables(customers: list[CustomerInvoice]) -> dict[str, list[tuple]]:
    tables: dict[str, list[tuple]] = {name: [] for name in INVOICE_INPUTS}
    for customer in customers:
        plan = f"plan_{customer.customer_id}"
        tables["customer_billing_periods"].append((customer.customer_id, PERIOD, PERIOD_END, 1))
        tables["int_customer_plan_days"].append(
            (customer.customer_id, "sub", plan, "usd", date(2000, 1, 1), date(9999, 12, 31))
        )
        tables["price_book_plans"].append((plan, plan, "usd", 0, customer.minimum_spend_minor))
        for kind, amount in customer.fee_lines:
            tables["subscription_fee_lines"].append(
                (customer.customer_id, "sub", PERIOD, kind, plan, "usd", 0, 0, amount)
            )
        for meter, share in zip(customer.meters, customer.credit_shares, strict=True):
            amounts = customer.daily_amounts(meter)
            for offset, ((units, _), amount) in enumerate(zip(meter.days, amounts, strict=True)):
                tables["billable_usage_daily"].append(
                    (
                        customer.customer_id,
                        meter.meter_id,
                        plan,
                        PERIOD + timedelta(offset),
                        PERIOD,
                        "usd",
                        units,
                        amount,
                        True,
                    )
                )
            credit = (sum(amounts, Decimal(0)) * share).quantize(
                Decimal("1e-12"), rounding=ROUND_DOWN
            )
            if credit > 0:
                tables["stg_billing__credit_applications"].append(
                    ("g", customer.customer_id, meter.meter_id, PERIOD, PERIOD, "usd", credit)
                )
    return tables


@pytest.fixture(scope="module")
def invoice_sql(dbt_build: RatingBuild) -> tuple[str, list[tuple[str, str]]]:
    """The database name the compiled SQL qualifies relations with, and the models' SQL in
    build order."""
    models = ["minimum_spend_period", "invoice_lines", "invoice_credits"]
    return dbt_build.warehouse.stem, [(m, dbt_build.compiled_sql(m)) for m in models]


@settings(max_examples=150, deadline=None)
@given(
    st.integers(min_value=1, max_value=4).flatmap(
        lambda count: st.tuples(*[customer_invoices(number) for number in range(count)])
    )
)
def test_random_invoices_add_up_in_the_compiled_sql(
    invoice_sql: tuple[str, list[tuple[str, str]]], customers: tuple[CustomerInvoice, ...]
) -> None:
    database, models = invoice_sql
    with duckdb.connect() as conn:
        conn.execute(f"attach ':memory:' as {database}")
        conn.execute(f"use {database}")
        write_tables(conn, INVOICE_INPUTS, _invoice_tables(list(customers)))
        for name, sql in models:
            conn.execute(f"create table main.{name} as {sql}")
        lines = conn.execute(
            "select customer_id, line_type, line_id, amount_minor_exact, amount_minor, "
            "rounding_minor from main.invoice_lines order by all"
        ).fetchall()
        credits = conn.execute(
            "select customer_id, meter_id, usage_amount_minor, credit_applied_minor_exact, "
            "credit_applied_minor, amount_due_minor from main.invoice_credits order by all"
        ).fetchall()

    for customer in customers:
        usage = {m.meter_id: sum(customer.daily_amounts(m), Decimal(0)) for m in customer.meters}
        expected = [("usage", meter_id, amount) for meter_id, amount in usage.items()]
        expected += [(kind, "sub", amount) for kind, amount in customer.fee_lines]
        top_up = minimum_top_up(
            minimum_spend_minor=customer.minimum_spend_minor,
            usage_amount_minor=sum(usage.values(), Decimal(0)),
        )
        if customer.minimum_spend_minor > 0 and top_up > 0:
            expected.append(("minimum_top_up", f"plan_{customer.customer_id}", top_up))
        rows = [row[1:] for row in lines if row[0] == customer.customer_id]
        assert sorted(row[:3] for row in rows) == sorted(expected)
        for _, _, exact, rounded, rounding in rows:
            assert rounded == round_to_minor_units(exact)
            assert rounding == rounded - exact
        total = sum(row[3] for row in rows)
        assert total == sum(round_to_minor_units(amount) for *_, amount in expected)
        assert total == sum(row[2] for row in rows) + sum(row[4] for row in rows)

        for _, meter_id, usage_minor, credit_exact, credit_minor, due in (
            row for row in credits if row[0] == customer.customer_id
        ):
            assert 0 <= credit_exact <= usage[meter_id]
            assert usage_minor == round_to_minor_units(usage[meter_id])
            assert credit_minor == round_to_minor_units(credit_exact)
            assert usage_minor == credit_minor + due
            assert due >= 0
