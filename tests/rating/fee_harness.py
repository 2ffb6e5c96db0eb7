"""Runs the dbt flat-fee models alone on a scratch DuckDB file: the staged Stripe subscriptions
and customers and the plans a test chose go in as the tables the fee models read, and one
``dbt build`` makes the periods and ``subscription_fee_lines`` (with their unit and data tests)
for every case at once."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import duckdb

from tests.dbt_cli import run_dbt
from tests.rating.dbt_harness import DbtFailed
from tests.rating.fee_cases import FeeCase

# Column types as stg_stripe__subscriptions and the price_book_plans seed give them.
SUBSCRIPTION_COLUMNS = (
    "subscription_id varchar, customer_id varchar, status varchar, currency varchar, "
    "plan_id varchar, started_at timestamp, ended_at timestamp, "
    "current_period_start_at timestamp, current_period_end_at timestamp, "
    "billing_cycle_anchor_at timestamp, created_at timestamp"
)
PLAN_COLUMNS = (
    "plan_id varchar, plan_name varchar, currency varchar, monthly_fee_minor bigint, "
    "minimum_spend_minor decimal(24, 12)"
)


@dataclass(frozen=True)
class BuiltLine:
    customer_id: str
    subscription_id: str
    billing_period_start_at: datetime
    line_type: str
    quantity_seconds: int
    period_seconds: int
    unit_amount_minor: int
    amount_minor_exact: Decimal
    amount_minor: int


def _naive(moment: datetime | None) -> datetime | None:
    """DuckDB's TIMESTAMP is UTC without a zone, as the staging model casts it."""
    return moment.astimezone(UTC).replace(tzinfo=None) if moment else None


def _prefixed(key: str, value: str | None) -> str | None:
    return f"{key}__{value}" if value else value


def build_fee_lines(cases: Sequence[FeeCase], work_dir: Path) -> dict[str, list[BuiltLine]]:
    """Every case's subscriptions and plans (ids prefixed by the case, so cases never meet) in
    one warehouse, built by one dbt build; the fee lines by case name, ids unprefixed."""
    keys = {f"c{number:05d}": case for number, case in enumerate(cases)}
    subscriptions, plans = [], []
    for key, case in keys.items():
        plans.extend(
            (_prefixed(key, plan_id), plan_id, "usd", fee, Decimal(0))
            for plan_id, fee in case.fees.items()
        )
        subscriptions.extend(
            (
                _prefixed(key, row.subscription_id),
                _prefixed(key, row.customer_id),
                row.status,
                "usd",
                _prefixed(key, row.plan_id),
                _naive(row.started_at),
                _naive(row.ended_at),
                _naive(row.current_period_start_at),
                _naive(row.current_period_end_at),
                _naive(row.billing_cycle_anchor_at),
                _naive(row.started_at),
            )
            for row in case.subscriptions
        )
    path = work_dir / "fees.duckdb"
    with duckdb.connect(str(path)) as conn:
        conn.execute(
            f"create or replace table main.stg_stripe__subscriptions ({SUBSCRIPTION_COLUMNS})"
        )
        conn.execute(f"create or replace table main.price_book_plans ({PLAN_COLUMNS})")
        conn.executemany(
            "insert into main.stg_stripe__subscriptions values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            subscriptions,
        )
        # The customers whose billing cycles int_customer_billing_cycles reads.
        conn.execute(
            "create or replace table main.stg_stripe__customers as "
            "select distinct customer_id from main.stg_stripe__subscriptions"
        )
        conn.executemany("insert into main.price_book_plans values (?, ?, ?, ?, ?)", plans)
    _dbt_build(path, work_dir)
    built: dict[str, list[BuiltLine]] = {case.name: [] for case in cases}
    with duckdb.connect(str(path), read_only=True) as conn:
        rows = conn.execute(
            "select customer_id, subscription_id, billing_period_start_at, line_type, "
            "quantity_seconds, period_seconds, unit_amount_minor, amount_minor_exact, "
            "amount_minor from main.subscription_fee_lines "
            "order by customer_id, subscription_id, billing_period_start_at, line_type"
        ).fetchall()
    for customer, subscription, period_start, *figures in rows:
        key, _, customer_id = customer.partition("__")
        built[keys[key].name].append(
            BuiltLine(
                customer_id,
                subscription.partition("__")[2],
                period_start.replace(tzinfo=UTC),
                *figures,
            )
        )
    return built


def _dbt_build(path: Path, work_dir: Path) -> None:
    result = run_dbt(
        "build",
        "--select",
        "int_customer_billing_cycles",
        "int_subscription_fee_periods",
        "subscription_fee_lines",
        warehouse=path,
        work_dir=work_dir,
    )
    if result.returncode != 0:
        raise DbtFailed(result.stdout[-8000:] + result.stderr[-2000:])
