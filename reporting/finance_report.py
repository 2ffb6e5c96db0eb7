"""Read one billing period of the warehouse into plain dataclasses for the finance report.

Money stays exact: DuckDB's DECIMAL columns arrive as ``Decimal`` minor units and are never
converted here. The warehouse is opened read-only so a report can never change what it reports.
Tables that later pipeline steps build (the reconciliation marts) may be missing; they come back
as ``None`` with their names, so the page can say what is not computed yet instead of failing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

import duckdb

PERIOD_PATTERN = re.compile(r"(\d{4})-(\d{2})")
ACCURACY_TABLE = "invoice_accuracy"
DISCREPANCIES_TABLE = "reconciliation_discrepancies"
# The report lists the largest discrepancies only; the table holds them all.
DISCREPANCIES_SHOWN = 20


class WarehouseError(Exception):
    """The warehouse cannot be read: not built yet, or locked by a running pipeline."""


@dataclass(frozen=True)
class BillingPeriod:
    """A calendar month in UTC: ``start`` inclusive, ``end`` exclusive (like the partitions).

    The report covers the billing periods that begin in it: each customer's own (their billing
    cycle's anchor day), which are the calendar month for a customer without an anchor."""

    start: date
    end: date

    @classmethod
    def parse(cls, text: str) -> BillingPeriod:
        match = PERIOD_PATTERN.fullmatch(text.strip())
        month = int(match.group(2)) if match else 0
        if not match or not 1 <= month <= 12:
            raise ValueError(f"a billing period is a month like 2026-10, not {text!r}")
        year = int(match.group(1))
        start = date(year, month, 1)
        end = date(year + 1, 1, 1) if month == 12 else date(year, month + 1, 1)
        return cls(start=start, end=end)

    @property
    def label(self) -> str:
        return f"{self.start:%Y-%m}"


@dataclass(frozen=True)
class LedgerCheck:
    """Whether every replicated ledger transaction sums to zero per currency."""

    transactions: int
    unbalanced_transactions: int

    @property
    def balanced(self) -> bool:
        return self.unbalanced_transactions == 0


@dataclass(frozen=True)
class AccuracyRow:
    currency: str
    invoices_compared: int
    invoices_matching: int
    matching_share: Decimal
    total_abs_difference_minor: Decimal
    largest_difference_minor: Decimal
    revenue_at_risk_minor: Decimal


@dataclass(frozen=True)
class DiscrepancyRow:
    customer_id: str
    meter_id: str
    currency: str
    meterbook_amount_minor: Decimal | None
    stripe_amount_minor: Decimal | None
    ledger_amount_minor: Decimal | None
    stripe_difference_minor: Decimal | None
    ledger_difference_minor: Decimal | None
    likely_cause: str | None
    status: str


@dataclass(frozen=True)
class InvoiceAccuracy:
    """``None`` for a table that is not in the warehouse yet (see ``missing_tables``)."""

    rows: list[AccuracyRow] | None
    discrepancies: list[DiscrepancyRow] | None
    discrepancies_total: int
    lines_ok: int
    missing_tables: tuple[str, ...]


@dataclass(frozen=True)
class PlanModelRevenue:
    plan_id: str
    plan_name: str
    model: str
    currency: str
    customers: int
    amount_minor_exact: Decimal


@dataclass(frozen=True)
class DailyRevenue:
    usage_date: date
    model: str
    currency: str
    amount_minor_exact: Decimal


@dataclass(frozen=True)
class CustomerInvoice:
    customer_id: str
    currency: str
    lines: int
    amount_minor_exact: Decimal
    amount_minor: Decimal
    rounding_minor: Decimal


@dataclass(frozen=True)
class Revenue:
    by_plan_and_model: list[PlanModelRevenue]
    daily: list[DailyRevenue]
    invoices: list[CustomerInvoice]
    # Customer-meter-days with usage but no price in force: not billed, worth a look.
    unpriced_days: int


@dataclass(frozen=True)
class LagDay:
    """One usage date; each p95 is the worst meter's, so a slow meter is not averaged away."""

    usage_date: date
    events: int
    slots: int
    slots_sent: int
    received_lag_p95_seconds: float | None
    billed_lag_p95_seconds: float | None
    sent_lag_p95_seconds: float | None
    billed_lag_max_seconds: float | None


@dataclass(frozen=True)
class FinanceReport:
    period: BillingPeriod
    generated_at: datetime
    warehouse_path: Path
    ledger: LedgerCheck | None
    accuracy: InvoiceAccuracy
    revenue: Revenue
    lag: list[LagDay] | None


def load_finance_report(warehouse_path: Path, period: BillingPeriod) -> FinanceReport:
    """Read every section of the report for ``period`` from one read-only connection."""
    if not warehouse_path.exists():
        raise WarehouseError(
            f"no warehouse at {warehouse_path}: run the pipeline first "
            "(meterbook demo, run or backfill)"
        )
    try:
        conn = duckdb.connect(str(warehouse_path), read_only=True)
    except duckdb.IOException as error:
        raise WarehouseError(
            f"cannot open the warehouse at {warehouse_path} read-only ({error}); "
            "is a pipeline run writing to it?"
        ) from None
    with conn:
        return FinanceReport(
            period=period,
            generated_at=datetime.now(UTC),
            warehouse_path=warehouse_path,
            ledger=_ledger_check(conn),
            accuracy=_invoice_accuracy(conn, period),
            revenue=_revenue(conn, period),
            lag=_lag(conn, period),
        )


def _table_exists(conn: duckdb.DuckDBPyConnection, name: str, schema: str | None = None) -> bool:
    row = conn.execute(
        "select count(*) from information_schema.tables "
        "where table_catalog = current_database() "
        "and table_schema = coalesce(?, current_schema()) and table_name = ?",
        [schema, name],
    ).fetchone()
    return bool(row and row[0])


def _ledger_check(conn: duckdb.DuckDBPyConnection) -> LedgerCheck | None:
    if not _table_exists(conn, "entries", schema="ledger"):
        return None
    row = conn.execute(
        """
        with sums as (
            select transaction_id, currency, sum(amount_minor) as total_minor
            from ledger.entries
            group by transaction_id, currency
        )
        select count(distinct transaction_id),
               count(distinct transaction_id) filter (where total_minor <> 0)
        from sums
        """
    ).fetchone()
    assert row is not None
    return LedgerCheck(transactions=int(row[0]), unbalanced_transactions=int(row[1]))


def _invoice_accuracy(conn: duckdb.DuckDBPyConnection, period: BillingPeriod) -> InvoiceAccuracy:
    missing = tuple(
        name for name in (ACCURACY_TABLE, DISCREPANCIES_TABLE) if not _table_exists(conn, name)
    )
    rows = None
    if ACCURACY_TABLE not in missing:
        rows = [
            AccuracyRow(*row)
            for row in conn.execute(
                f"""
                select currency, sum(invoices_compared), sum(invoices_matching),
                       cast(cast(sum(invoices_matching) as decimal(18, 6))
                            / sum(invoices_compared) as decimal(9, 6)),
                       sum(total_abs_difference_minor), max(largest_difference_minor),
                       sum(revenue_at_risk_minor)
                from {ACCURACY_TABLE}
                where billing_period_start_date >= ? and billing_period_start_date < ?
                group by currency
                order by currency
                """,
                [period.start, period.end],
            ).fetchall()
        ]
    discrepancies, total, lines_ok = None, 0, 0
    if DISCREPANCIES_TABLE not in missing:
        counts = conn.execute(
            f"select count(*) filter (where status <> 'ok'), count(*) filter (where status = 'ok') "
            f"from {DISCREPANCIES_TABLE} "
            "where billing_period_start_date >= ? and billing_period_start_date < ?",
            [period.start, period.end],
        ).fetchone()
        assert counts is not None
        total, lines_ok = int(counts[0]), int(counts[1])
        discrepancies = [
            DiscrepancyRow(*row)
            for row in conn.execute(
                f"""
                select customer_id, meter_id, currency, meterbook_amount_minor,
                       stripe_amount_minor, ledger_amount_minor, stripe_difference_minor,
                       ledger_difference_minor, likely_cause, status
                from {DISCREPANCIES_TABLE}
                where billing_period_start_date >= ? and billing_period_start_date < ?
                    and status <> 'ok'
                order by greatest(coalesce(abs(stripe_difference_minor), 0),
                                  coalesce(abs(ledger_difference_minor), 0)) desc,
                         customer_id, meter_id
                limit {DISCREPANCIES_SHOWN}
                """,
                [period.start, period.end],
            ).fetchall()
        ]
    return InvoiceAccuracy(
        rows=rows,
        discrepancies=discrepancies,
        discrepancies_total=total,
        lines_ok=lines_ok,
        missing_tables=missing,
    )


def _revenue(conn: duckdb.DuckDBPyConnection, period: BillingPeriod) -> Revenue:
    # The plan is the one billable_usage_daily rated the day with (int_customer_plan_days);
    # the model comes from the price book's meter definition.
    priced = """
        select usage.customer_id, usage.usage_date, usage.currency, usage.amount_minor_exact,
               coalesce(usage.plan_id, 'none') as plan_id,
               coalesce(plans.plan_name, usage.plan_id, 'No plan') as plan_name,
               coalesce(meters.model, usage.model, usage.meter_id) as model
        from billable_usage_daily as usage
        left join price_book_meters as meters on usage.meter_id = meters.meter_id
        left join price_book_plans as plans on usage.plan_id = plans.plan_id
        where usage.billing_period_start_date >= ? and usage.billing_period_start_date < ?
            and usage.is_priced
    """
    by_plan_and_model = [
        PlanModelRevenue(*row)
        for row in conn.execute(
            f"""
            with priced as ({priced})
            select plan_id, plan_name, model, currency, count(distinct customer_id),
                   sum(amount_minor_exact)
            from priced
            group by plan_id, plan_name, model, currency
            order by currency, plan_id, model
            """,
            [period.start, period.end],
        ).fetchall()
    ]
    daily = [
        DailyRevenue(*row)
        for row in conn.execute(
            f"""
            with priced as ({priced})
            select usage_date, model, currency, sum(amount_minor_exact)
            from priced
            group by usage_date, model, currency
            order by usage_date, model, currency
            """,
            [period.start, period.end],
        ).fetchall()
    ]
    invoices = [
        CustomerInvoice(*row)
        for row in conn.execute(
            """
            select customer_id, currency, count(*), sum(amount_minor_exact),
                   cast(sum(amount_minor) as decimal(38, 0)), sum(rounding_minor)
            from invoice_lines
            where billing_period_start_date >= ? and billing_period_start_date < ?
            group by customer_id, currency
            order by sum(amount_minor) desc, customer_id
            """,
            [period.start, period.end],
        ).fetchall()
    ]
    unpriced = conn.execute(
        "select count(*) from billable_usage_daily "
        "where billing_period_start_date >= ? and billing_period_start_date < ? "
        "and not coalesce(is_priced, false)",
        [period.start, period.end],
    ).fetchone()
    return Revenue(
        by_plan_and_model=by_plan_and_model,
        daily=daily,
        invoices=invoices,
        unpriced_days=int(unpriced[0]) if unpriced else 0,
    )


def _lag(conn: duckdb.DuckDBPyConnection, period: BillingPeriod) -> list[LagDay] | None:
    if not _table_exists(conn, "metering_lag_by_day"):
        return None
    return [
        LagDay(*row)
        for row in conn.execute(
            """
            select usage_date, events, slots, slots_sent, slowest_meter_received_lag_p95_seconds,
                slowest_meter_billed_lag_p95_seconds, slowest_meter_sent_lag_p95_seconds,
                billed_lag_max_seconds
            from metering_lag_by_day
            where usage_date >= ? and usage_date < ?
            order by usage_date
            """,
            [period.start, period.end],
        ).fetchall()
    ]
