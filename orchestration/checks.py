"""Blocking quality gates: nothing reaches the ledger or Stripe unless they pass."""

import dagster as dg
import psycopg

from orchestration.assets.billing import (
    INVOICE_LINES,
    ledger_usage_accruals,
    ledger_usage_batch,
    stripe_meter_events,
)
from orchestration.assets.ingestion import ACCEPTED_USAGE_EVENTS, USAGE_FILE_COUNTS, usage_events
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
from orchestration.resources import LedgerResource, WarehouseResource
from stripe_sync import outbox

STAGING_USAGE = dg.AssetKey("stg_usage__events")


@dg.asset_check(
    asset=ACCEPTED_USAGE_EVENTS,
    blocking=True,
    partitions_def=daily_partitions,
    description=(
        "Great Expectations suite `accepted_usage_events` over the partition's accepted events "
        "(schema, known types and customers, token ranges, timestamps). Blocks billing on failure."
    ),
)
def accepted_usage_events_suite(
    context: dg.AssetCheckExecutionContext, warehouse: WarehouseResource
) -> dg.AssetCheckResult:
    window = context.partition_time_window
    with warehouse.connect() as conn:
        profile = usage_profile(conn, window.start.date(), window.end.date())
    return gate_result(validate_usage_profile(profile), events_validated=profiled_events(profile))


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


@dg.asset_check(
    asset=USAGE_FILE_COUNTS,
    blocking=True,
    partitions_def=daily_partitions,
    description=(
        "Great Expectations suite `usage_files`: blocks a day whose raw lines mostly fail the "
        "event schema (a format change upstream); thresholds in quality/thresholds.toml."
    ),
)
def usage_files_suite(
    context: dg.AssetCheckExecutionContext, warehouse: WarehouseResource
) -> dg.AssetCheckResult:
    window = context.partition_time_window
    with warehouse.connect() as conn:
        profile = usage_files_profile(
            conn, window.start.date(), window.end.date(), load_thresholds()
        )
    return gate_result(validate_usage_files(profile))


@dg.asset_check(
    asset=STAGING_USAGE,
    blocking=True,
    partitions_def=daily_partitions,
    description=(
        "Great Expectations suite `staging_usage_events` over the partition's staged events: "
        "non-negative typed tokens, usage date = occurrence date, each event id staged once."
    ),
)
def staging_usage_events_suite(
    context: dg.AssetCheckExecutionContext, warehouse: WarehouseResource
) -> dg.AssetCheckResult:
    window = context.partition_time_window
    with warehouse.connect() as conn:
        profile = staging_usage_profile(conn, window.start.date(), window.end.date())
    return gate_result(validate_staging_usage(profile), events_validated=profiled_events(profile))


@dg.asset_check(
    asset=INVOICE_LINES,
    blocking=True,
    partitions_def=daily_partitions,
    description=(
        "Great Expectations suite `invoice_lines` over the billing periods the partition "
        "touched: non-negative exact amounts at scale 12, currency set, rounded once."
    ),
)
def invoice_lines_suite(
    context: dg.AssetCheckExecutionContext, warehouse: WarehouseResource
) -> dg.AssetCheckResult:
    window = context.partition_time_window
    with warehouse.connect() as conn:
        profile = invoice_lines_profile(conn, window.start.date(), window.end.date())
    return gate_result(validate_invoice_lines(profile))


@dg.asset_check(
    asset=ledger_usage_batch,
    blocking=True,
    partitions_def=daily_partitions,
    description=(
        "Great Expectations suite `ledger_batch` over the staged batch before it is posted: "
        "every transaction balances per currency, has ≥ 2 non-zero exact entries and a usage "
        "accrual key. Blocks the posting and Stripe on failure."
    ),
)
def ledger_batch_suite(
    context: dg.AssetCheckExecutionContext, warehouse: WarehouseResource
) -> dg.AssetCheckResult:
    window = context.partition_time_window
    with warehouse.connect() as conn:
        profile = ledger_batch_profile(conn, window.start.date(), window.end.date())
    return gate_result(validate_ledger_batch(profile))


@dg.asset_check(
    asset=USAGE_FILE_COUNTS,
    blocking=True,
    partitions_def=daily_partitions,
    description="Every raw line is accounted for: raw = accepted + duplicates + quarantined.",
)
def usage_lines_conserved(
    context: dg.AssetCheckExecutionContext, warehouse: WarehouseResource
) -> dg.AssetCheckResult:
    window = context.partition_time_window
    with warehouse.connect() as conn:
        rows = conn.execute(
            """
            select source_file, raw_lines, accepted_lines, duplicate_lines, quarantined_lines
            from ingest.usage_file_counts
            where arrival_date >= ? and arrival_date < ?
              and raw_lines <> accepted_lines + duplicate_lines + quarantined_lines
            """,
            [window.start.date(), window.end.date()],
        ).fetchall()
    return dg.AssetCheckResult(
        passed=not rows,
        metadata={"files_not_conserved": dg.MetadataValue.json([list(map(str, r)) for r in rows])},
    )


@dg.asset_check(
    asset=ledger_usage_accruals,
    blocking=True,
    partitions_def=daily_partitions,
    description=(
        "Every ledger invariant holds over the whole ledger: each transaction balances per "
        "currency, all entries sum to zero, no orphan entries, no guarded account below zero."
    ),
)
def ledger_balanced(ledger: LedgerResource) -> dg.AssetCheckResult:
    with ledger.open() as book:
        report = book.verify()
    return dg.AssetCheckResult(
        passed=report.ok,
        metadata={
            "transactions": report.transactions,
            "entries": report.entries,
            "problems": dg.MetadataValue.json(report.problems()),
            "unbalanced_transactions": dg.MetadataValue.json(report.unbalanced_transactions[:20]),
            "content_hash": report.content_hash,
        },
    )


@dg.asset_check(
    asset=stripe_meter_events,
    partitions_def=daily_partitions,
    description=(
        "No dead letters in the Stripe outbox (writes Stripe refused as invalid) and nothing "
        "left pending; lists them with Stripe's last error. A warning: it does not stop runs."
    ),
)
def stripe_outbox_clear(ledger: LedgerResource) -> dg.AssetCheckResult:
    with psycopg.connect(ledger.resolved_url(), autocommit=True) as conn:
        outbox.ensure_schema(conn)
        counts = outbox.state_counts(conn)
        problems = outbox.problem_writes(conn, limit=20)
    return dg.AssetCheckResult(
        passed=not counts.get("dead") and not counts.get("pending"),
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "outbox_states": dg.MetadataValue.json(counts),
            "problem_writes": dg.MetadataValue.json(
                [
                    {
                        "state": p.state,
                        "slot": p.slot_id,
                        "revision": p.revision,
                        "attempts": p.attempts,
                        "last_error": p.last_error,
                    }
                    for p in problems
                ]
            ),
        },
    )


# A day shows red in the UI when its raw usage or its billing is not materialised by 03:00 UTC
# the next morning (the schedule runs at 01:00).
FRESHNESS_DEADLINE_CRON = "0 3 * * *"
daily_freshness_checks = dg.build_time_partition_freshness_checks(
    assets=[usage_events, ledger_usage_accruals, stripe_meter_events],
    deadline_cron=FRESHNESS_DEADLINE_CRON,
    timezone="UTC",
)
freshness_checks_sensor = dg.build_sensor_for_freshness_checks(
    freshness_checks=daily_freshness_checks,
    default_status=dg.DefaultSensorStatus.RUNNING,
)


METERING_LAG = dg.AssetKey("metering_lag_daily")
LAG_WARNING_SECONDS = 2 * 86_400  # billed or sent more than two days after the day ended


@dg.asset_check(
    asset=METERING_LAG,
    partitions_def=daily_partitions,
    description=(
        "The metering lag of the usage dates this partition touched, as a table to read at a "
        "glance; warns when a slot was billed or sent more than two days after its day ended."
    ),
)
def metering_lag_summary(
    context: dg.AssetCheckExecutionContext, warehouse: WarehouseResource
) -> dg.AssetCheckResult:
    window = context.partition_time_window
    with warehouse.connect() as conn:
        rows = conn.execute(
            """
            select usage_date, sum(events), max(received_lag_p95_seconds),
                max(received_lag_max_seconds), sum(slots), sum(slots_sent),
                max(billed_lag_max_seconds), max(sent_lag_max_seconds)
            from metering_lag_daily
            where usage_date in (
                select usage_date from ingest.partition_usage_dates
                where arrival_date >= ? and arrival_date < ?)
            group by usage_date order by usage_date
            """,
            [window.start.date(), window.end.date()],
        ).fetchall()
    header = (
        "| usage date | events | received p95 | received max | slots | sent | billed max "
        "| sent max |\n|---|---|---|---|---|---|---|---|\n"
    )
    table = header + "".join(
        f"| {day} | {events or 0:,} | {_hours(p95)} | {_hours(rmax)} | {slots:,} | "
        f"{sent:,} | {_hours(bmax)} | {_hours(smax)} |\n"
        for day, events, p95, rmax, slots, sent, bmax, smax in rows
    )
    slowest = max((max(r[6] or 0, r[7] or 0) for r in rows), default=0)
    unsent = sum(r[4] - r[5] for r in rows)
    return dg.AssetCheckResult(
        passed=slowest <= LAG_WARNING_SECONDS and unsent == 0,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "lag_table": dg.MetadataValue.md(table),
            "slowest_billing_or_send_hours": round(slowest / 3600, 2),
            "slots_not_sent": unsent,
        },
    )


def _hours(seconds: float | None) -> str:
    return "—" if seconds is None else f"{seconds / 3600:.1f} h"


INVOICE_ACCURACY = dg.AssetKey("invoice_accuracy")


@dg.asset_check(
    asset=INVOICE_ACCURACY,
    partitions_def=daily_partitions,
    description=(
        "Invoice accuracy of the billing periods this partition touched, with the largest "
        "discrepancies (Meterbook vs Stripe's meter counts vs the ledger), as tables to read at "
        "a glance; warns when any invoice is not exact to the minor unit."
    ),
)
def reconciliation_summary(
    context: dg.AssetCheckExecutionContext, warehouse: WarehouseResource
) -> dg.AssetCheckResult:
    window = context.partition_time_window
    with warehouse.connect() as conn:
        periods = conn.execute(
            "select distinct cast(date_trunc('month', usage_date) as date) "
            "from ingest.partition_usage_dates where arrival_date >= ? and arrival_date < ?",
            [window.start.date(), window.end.date()],
        ).fetchall()
        touched = [period for (period,) in periods]
        accuracy = conn.execute(
            "select billing_period_start_date, currency, invoices_compared, invoices_matching, "
            "total_abs_difference_minor, largest_difference_minor, revenue_at_risk_minor "
            "from invoice_accuracy where billing_period_start_date in "
            "(select unnest(?::date[])) order by 1, 2",
            [touched],
        ).fetchall()
        largest = conn.execute(
            "select customer_id, billing_period_start_date, meter_id, meterbook_amount_minor, "
            "stripe_amount_minor, ledger_amount_minor, likely_cause, days_stripe_differs "
            "from reconciliation_discrepancies where billing_period_start_date in "
            "(select unnest(?::date[])) "
            "order by abs(stripe_difference_minor) + abs(ledger_difference_minor) desc, "
            "customer_id, meter_id limit 10",
            [touched],
        ).fetchall()
    accuracy_table = (
        "| period | currency | invoices | exact | abs. difference | largest | at risk |\n"
        "|---|---|---|---|---|---|---|\n"
        + "".join(
            f"| {period} | {currency} | {compared:,} | {matching:,} | {total:,} | {big:,} | "
            f"{risk:,} |\n"
            for period, currency, compared, matching, total, big, risk in accuracy
        )
    )
    discrepancy_table = (
        "| customer | period | meter | Meterbook | Stripe | ledger | cause | days |\n"
        "|---|---|---|---|---|---|---|---|\n"
        + "".join(
            f"| {customer} | {period} | {meter} | {ours:,} | {theirs:,} | {ledger:,} | "
            f"{cause} | {days or '—'} |\n"
            for customer, period, meter, ours, theirs, ledger, cause, days in largest
        )
    )
    inexact = sum(row[2] - row[3] for row in accuracy)
    return dg.AssetCheckResult(
        passed=inexact == 0,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "invoice_accuracy": dg.MetadataValue.md(accuracy_table),
            "largest_discrepancies": dg.MetadataValue.md(discrepancy_table),
            "invoices_not_exact": inexact,
            "amounts": "whole minor units, each side rounded once per invoice line",
        },
    )
