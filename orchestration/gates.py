"""The Great Expectations gates: blocking checks that stop a partition before the ledger and
Stripe. Each one profiles its asset's partition in SQL and validates the frame with its suite
(``orchestration/quality``); a failure lists the failing expectations and sample rows."""

from collections.abc import Callable
from datetime import date
from typing import Any

import dagster as dg
import duckdb

from orchestration.assets.billing import INVOICE_LINES, ledger_usage_batch
from orchestration.assets.ingestion import ACCEPTED_USAGE_EVENTS, USAGE_FILE_COUNTS
from orchestration.partitions import daily_partitions
from orchestration.quality.gx_runner import SuiteOutcome
from orchestration.quality.invoice_lines_suite import invoice_lines_profile, validate_invoice_lines
from orchestration.quality.ledger_batch_suite import ledger_batch_profile, validate_ledger_batch
from orchestration.quality.staging_usage_suite import (
    staging_usage_profile,
    validate_staging_usage,
)
from orchestration.quality.thresholds import load_thresholds
from orchestration.quality.usage_files_suite import usage_files_profile, validate_usage_files
from orchestration.quality.usage_suite import (
    profiled_events,
    usage_profile,
    validate_usage_profile,
)
from orchestration.resources import WarehouseResource

STAGING_USAGE = dg.AssetKey("stg_usage__events")

Profile = Callable[[duckdb.DuckDBPyConnection, date, date], Any]


def gate_result(outcome: SuiteOutcome, **extra: int) -> dg.AssetCheckResult:
    """A suite's outcome as check metadata: what failed, sample rows, how much was looked at."""
    return dg.AssetCheckResult(
        passed=outcome.success,
        metadata={
            **extra,
            "profile_rows": outcome.rows,
            "failed_expectations": dg.MetadataValue.json(outcome.failures),
            "sample_failing_rows": dg.MetadataValue.json(outcome.sample_rows),
        },
    )


def gx_gate(
    *,
    name: str,
    asset: Any,
    description: str,
    profile: Profile,
    validate: Callable[[Any], SuiteOutcome],
    counts_events: bool = False,
) -> dg.AssetChecksDefinition:
    """A blocking, partitioned check: ``validate(profile(partition window))``."""

    @dg.asset_check(
        name=name,
        asset=asset,
        blocking=True,
        partitions_def=daily_partitions,
        description=description,
    )
    def gate(
        context: dg.AssetCheckExecutionContext, warehouse: WarehouseResource
    ) -> dg.AssetCheckResult:
        window = context.partition_time_window
        with warehouse.connect() as conn:
            frame = profile(conn, window.start.date(), window.end.date())
        extra = {"events_validated": profiled_events(frame)} if counts_events else {}
        return gate_result(validate(frame), **extra)

    return gate


accepted_usage_events_suite = gx_gate(
    name="accepted_usage_events_suite",
    asset=ACCEPTED_USAGE_EVENTS,
    description=(
        "Great Expectations suite `accepted_usage_events` over the partition's accepted events "
        "(schema, known types and customers, token ranges, timestamps). Blocks billing on failure."
    ),
    profile=usage_profile,
    validate=validate_usage_profile,
    counts_events=True,
)

usage_files_suite = gx_gate(
    name="usage_files_suite",
    asset=USAGE_FILE_COUNTS,
    description=(
        "Great Expectations suite `usage_files`: blocks a day whose raw lines mostly fail the "
        "event schema (a format change upstream); thresholds in quality/thresholds.toml."
    ),
    profile=lambda conn, start, end: usage_files_profile(conn, start, end, load_thresholds()),
    validate=validate_usage_files,
)

staging_usage_events_suite = gx_gate(
    name="staging_usage_events_suite",
    asset=STAGING_USAGE,
    description=(
        "Great Expectations suite `staging_usage_events` over the partition's staged events: "
        "non-negative typed tokens, usage date = occurrence date, each event id staged once."
    ),
    profile=staging_usage_profile,
    validate=validate_staging_usage,
    counts_events=True,
)

invoice_lines_suite = gx_gate(
    name="invoice_lines_suite",
    asset=INVOICE_LINES,
    description=(
        "Great Expectations suite `invoice_lines` over the billing periods the partition "
        "touched: non-negative exact amounts at scale 12, currency set, rounded once."
    ),
    profile=invoice_lines_profile,
    validate=validate_invoice_lines,
)

ledger_batch_suite = gx_gate(
    name="ledger_batch_suite",
    asset=ledger_usage_batch,
    description=(
        "Great Expectations suite `ledger_batch` over the staged batch before it is posted: "
        "every transaction balances per currency, has ≥ 2 non-zero exact entries and a usage "
        "accrual key. Blocks the posting and Stripe on failure."
    ),
    profile=ledger_batch_profile,
    validate=validate_ledger_batch,
)

GX_GATES = [
    usage_files_suite,
    accepted_usage_events_suite,
    staging_usage_events_suite,
    invoice_lines_suite,
    ledger_batch_suite,
]
