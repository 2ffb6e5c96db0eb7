"""The checks that are not Great Expectations suites (those are in ``gates.py``): line
conservation, the ledger's invariants, the Stripe outbox, freshness, lag and reconciliation."""

import dagster as dg
import psycopg

from orchestration.assets.billing import ledger_usage_accruals, stripe_meter_events
from orchestration.assets.ingestion import USAGE_FILE_COUNTS, usage_events
from orchestration.partitions import daily_partitions
from orchestration.resources import LedgerResource, WarehouseResource
from stripe_sync import outbox


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
        "No dead letters in the Stripe outbox (writes Stripe refused as invalid), nothing "
        "left pending and no meter slot held back (waiting for an arrival day not ingested "
        "yet); lists them with Stripe's last error or the days waited for. A warning: it does "
        "not stop runs."
    ),
)
def stripe_outbox_clear(ledger: LedgerResource) -> dg.AssetCheckResult:
    with psycopg.connect(ledger.resolved_url(), autocommit=True) as conn:
        outbox.ensure_schema(conn)
        counts = outbox.state_counts(conn)
        problems = outbox.problem_writes(conn, limit=20)
        held_count, held = outbox.held_slots(conn, limit=20)
    return dg.AssetCheckResult(
        passed=not counts.get("dead") and not counts.get("pending") and not held_count,
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
            "slots_held": held_count,
            "held_slots": dg.MetadataValue.json(
                [
                    {
                        "slot": h.slot_id,
                        "quantity": h.quantity,
                        "waiting_for": [day.isoformat() for day in h.waiting_for],
                    }
                    for h in held
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
            select usage_date, events, slowest_meter_received_lag_p95_seconds,
                received_lag_max_seconds, slots, slots_sent, billed_lag_max_seconds,
                sent_lag_max_seconds
            from metering_lag_by_day
            where usage_date in (
                select usage_date from ingest.partition_usage_dates
                where arrival_date >= ? and arrival_date < ?
            )
            order by usage_date
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
        # The billing periods (each customer's, by their billing cycle) the touched dates fall in.
        periods = conn.execute(
            "select distinct periods.billing_period_start_date "
            "from customer_billing_periods as periods "
            "inner join ingest.partition_usage_dates as touched "
            "on touched.usage_date >= periods.billing_period_start_date "
            "and touched.usage_date < periods.billing_period_end_date "
            "where touched.arrival_date >= ? and touched.arrival_date < ?",
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
