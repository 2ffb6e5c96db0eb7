"""The gate on the ledger batch before it is posted: balanced, well-formed, exact.

The ledger refuses an unbalanced transaction itself; this gate stops the whole partition before
any of it is posted and shows which transactions are wrong. Amounts reach the suite as text
(exact decimals) or as booleans computed in SQL, never as floats.
"""

from __future__ import annotations

from datetime import date
from typing import Any

import duckdb

from orchestration import ledger_batches
from orchestration.quality.gx_runner import SuiteOutcome, run_suite

# decimal(38, 12) as text: an optional minus, digits, a point and exactly 12 decimals.
EXACT_AMOUNT = r"^-?[0-9]+\.[0-9]{12}$"
# The keys the pipeline plans: usage accruals per slot, fee lines per subscription, period and
# line type, credit applications per grant and slot, credit expiries per grant (a grant id may
# hold ':'), each with its revision. Groups do not capture (pandas warns of capturing ones).
REVISION = r":r[1-9][0-9]*"
SLOT = r"[^:]+:[^:]+:[0-9]{4}-[0-9]{2}-[0-9]{2}"
FEE_LINE = r"[^:]+:[^:]+:\d{4}-\d{2}-\d{2}:(?:flat_fee|proration_charge|proration_credit)"
BATCH_KEY = (
    rf"^(?:usage_accrual:{SLOT}|credit_application:.+:{SLOT}|credit_expiry:.+"
    rf"|subscription_fee:{FEE_LINE}){REVISION}$"
)

PROFILE_SQL = """
select
    transaction_key,
    currency,
    count(*) as entries,
    cast(sum(amount_minor) as varchar) as imbalance_minor,
    sum(amount_minor) = 0 as is_balanced,
    bool_and(amount_minor <> 0) as has_no_zero_entries,
    cast(max(abs(amount_minor)) as varchar) as largest_entry_minor,
    count(distinct effective_at) = 1 as has_one_effective_time,
    min(account) as first_account
from billing.ledger_batch_entries
where window_start = ? and window_end = ?
group by transaction_key, currency
"""


def ledger_batch_profile(conn: duckdb.DuckDBPyConnection, start: date, end: date) -> Any:
    """One row per planned transaction and currency of the window's staged batch."""
    ledger_batches.ensure_schema(conn)
    return conn.execute(PROFILE_SQL, [start, end]).df()


def build_suite(gx: Any) -> Any:
    expectations = gx.expectations
    suite = gx.ExpectationSuite(name="ledger_batch")
    suite.add_expectation(
        expectations.ExpectColumnValuesToMatchRegex(column="transaction_key", regex=BATCH_KEY)
    )
    suite.add_expectation(
        expectations.ExpectColumnValuesToMatchRegex(column="currency", regex=r"^[a-z]{3}$")
    )
    suite.add_expectation(expectations.ExpectColumnValuesToBeBetween(column="entries", min_value=2))
    suite.add_expectation(
        expectations.ExpectColumnValuesToMatchRegex(
            column="largest_entry_minor", regex=EXACT_AMOUNT
        )
    )
    for column in ("is_balanced", "has_no_zero_entries", "has_one_effective_time"):
        suite.add_expectation(
            expectations.ExpectColumnValuesToBeInSet(column=column, value_set=[True])
        )
    return suite


def validate_ledger_batch(profile: Any) -> SuiteOutcome:
    return run_suite(
        "ledger_batch",
        build_suite,
        profile,
        row_identity=["transaction_key", "currency", "imbalance_minor"],
    )
