"""Invoices of random price books and usage, as dbt builds them (`invoice_lines`,
`invoice_credits`), against what the Python reference rating says each line is worth.

Each random case also has a plan minimum (half of them), flat-fee and proration lines, and
credit applied to part of its usage (tests/rating/cases.py, `random_invoice_terms`). The
properties: every line's exact amount is the reference's; the invoice total is the sum of its
lines, each rounded on its own with the one rounding rule, and the rounding is visible line by
line; charges = credit applied + amount due, with nothing ever due below zero.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import date, timedelta
from decimal import Decimal

from pricing.charges import minimum_top_up
from pricing.prorations import round_to_minor_units
from tests.rating.cases import Case, reference_rating
from tests.rating.dbt_harness import RatingBuild

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
