"""The gate on invoice lines: what a customer will be charged for a billing period.

Money stays exact: amounts are compared in SQL and reach the suite as booleans or as text, never
as floats. The lines checked are those of the billing periods (each customer's) the partition's
usage dates fall in, so a late event that changes last period's line is checked when it arrives.
"""

from __future__ import annotations

from datetime import date
from typing import Any

import duckdb

from orchestration.quality.gx_runner import SuiteOutcome, run_suite

# The magnitude of a decimal(38, 12) as text: digits, a point, exactly 12 decimals.
EXACT_AMOUNT_MAGNITUDE = r"^[0-9]+\.[0-9]{12}$"
LINE_TYPES = ["usage", "flat_fee", "proration_charge", "proration_credit", "minimum_top_up"]
CURRENCY_CODE = r"^[a-z]{3}$"

PROFILE_SQL = """
with touched as (
    select distinct usage_date
    from ingest.partition_usage_dates
    where arrival_date >= ? and arrival_date < ?
)
select
    lines.customer_id,
    cast(lines.billing_period_start_date as varchar) as billing_period_start_date,
    lines.line_type,
    lines.line_id,
    lines.currency,
    cast(abs(lines.amount_minor_exact) as varchar) as amount_minor_exact_magnitude,
    lines.amount_minor,
    lines.quantity_units,
    -- Only the credit for a plan's unused time is negative.
    (lines.line_type = 'proration_credit' and lines.amount_minor_exact <= 0)
        or (lines.line_type <> 'proration_credit' and lines.amount_minor_exact >= 0)
        as amount_sign_fits_line_type,
    abs(lines.rounding_minor) <= 0.5 as rounded_to_the_nearest_minor_unit,
    lines.amount_minor - lines.amount_minor_exact = lines.rounding_minor as rounding_is_recorded,
    coalesce(lines.billing_period_end_date > lines.billing_period_start_date, false)
        as period_is_ordered
from invoice_lines as lines
-- The lines of each customer's periods (their billing cycle's) that a touched date falls in; a
-- line without an end is kept, so that the suite sees it.
where exists (
    select 1 from touched
    where touched.usage_date >= lines.billing_period_start_date
        and (lines.billing_period_end_date is null
            or touched.usage_date < lines.billing_period_end_date)
)
"""


def invoice_lines_profile(conn: duckdb.DuckDBPyConnection, start: date, end: date) -> Any:
    return conn.execute(PROFILE_SQL, [start, end]).df()


def build_suite(gx: Any) -> Any:
    expectations = gx.expectations
    suite = gx.ExpectationSuite(name="invoice_lines")
    for column in ("customer_id", "billing_period_start_date", "line_id", "amount_minor"):
        suite.add_expectation(expectations.ExpectColumnValuesToNotBeNull(column=column))
    suite.add_expectation(
        expectations.ExpectColumnValuesToBeInSet(column="line_type", value_set=LINE_TYPES)
    )
    suite.add_expectation(
        expectations.ExpectColumnValuesToMatchRegex(column="currency", regex=CURRENCY_CODE)
    )
    suite.add_expectation(
        expectations.ExpectColumnValuesToMatchRegex(
            column="amount_minor_exact_magnitude", regex=EXACT_AMOUNT_MAGNITUDE
        )
    )
    suite.add_expectation(
        expectations.ExpectColumnValuesToBeBetween(column="quantity_units", min_value=0)
    )
    for column in (
        "amount_sign_fits_line_type",
        "rounded_to_the_nearest_minor_unit",
        "rounding_is_recorded",
        "period_is_ordered",
    ):
        suite.add_expectation(
            expectations.ExpectColumnValuesToBeInSet(column=column, value_set=[True])
        )
    return suite


def validate_invoice_lines(profile: Any) -> SuiteOutcome:
    return run_suite(
        "invoice_lines",
        build_suite,
        profile,
        row_identity=["customer_id", "billing_period_start_date", "line_type", "line_id"],
    )
