"""Runs the dbt rating alone on a scratch DuckDB file: the price book, usage and (calendar-month)
billing cycles a test chose go in as the tables ``billable_usage_daily`` and
``minimum_spend_period`` read, with the fee lines and credit applications ``invoice_lines`` and
``invoice_credits`` read, and dbt builds them all (with their unit tests and data tests) once,
however many cases the tables hold."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from pathlib import Path

import duckdb

from pricing.periods import CALENDAR_MONTH_ANCHOR_DAY, billing_period_of
from tests.dbt_cli import run_dbt
from tests.rating.cases import Case

# Column types as dbt_project.yml (seeds) and the upstream models give them.
INPUT_TABLES = {
    "price_book_plans": (
        "plan_id varchar, plan_name varchar, currency varchar, monthly_fee_minor bigint, "
        "minimum_spend_minor decimal(24, 12)"
    ),
    "price_book_meters": (
        "meter_id varchar, event_type varchar, model varchar, property_filters varchar, "
        "aggregation varchar, "
        "quantity_property varchar, unit_label varchar, description varchar"
    ),
    "price_book_charges": (
        "plan_id varchar, meter_id varchar, effective_from date, currency varchar, "
        "charge_model varchar, included_units bigint, unit_price_minor decimal(24, 12), "
        "package_size_units bigint, package_price_minor decimal(24, 12), "
        "percentage_rate decimal(24, 12), fixed_fee_minor decimal(24, 12)"
    ),
    "price_book_charge_tiers": (
        "plan_id varchar, meter_id varchar, effective_from date, up_to_units bigint, "
        "unit_price_minor decimal(24, 12), flat_fee_minor decimal(24, 12)"
    ),
    "int_customer_plan_days": (
        "customer_id varchar, subscription_id varchar, plan_id varchar, currency varchar, "
        "valid_from_date date, valid_to_date date"
    ),
    "int_meter_usage_daily": (
        "customer_id varchar, meter_id varchar, usage_date date, "
        "billing_period_start_date date, model varchar, event_count bigint, quantity_units hugeint"
    ),
    "int_customer_billing_cycles": (
        "customer_id varchar, billing_anchor_day integer, anchor_day_count integer"
    ),
    # The columns of subscription_fee_lines that invoice_lines reads.
    "subscription_fee_lines": (
        "customer_id varchar, subscription_id varchar, billing_period_start_date date, "
        "line_type varchar, plan_id varchar, currency varchar, quantity_seconds bigint, "
        "unit_amount_minor bigint, amount_minor_exact decimal(38, 12)"
    ),
    "stg_billing__credit_applications": (
        "grant_id varchar, customer_id varchar, meter_id varchar, usage_date date, "
        "billing_period_start_date date, currency varchar, "
        "credit_applied_minor_exact decimal(38, 12)"
    ),
}


@dataclass(frozen=True)
class RatedRow:
    customer_id: str
    meter_id: str
    usage_date: date
    quantity_units: int
    amount_minor_exact: Decimal
    period_to_date_amount_minor_exact: Decimal
    is_priced: bool


@dataclass(frozen=True)
class InvoiceLineRow:
    billing_period_start_date: date
    line_type: str
    amount_minor_exact: Decimal
    amount_minor: int
    rounding_minor: Decimal


@dataclass(frozen=True)
class InvoiceCreditRow:
    billing_period_start_date: date
    usage_amount_minor: int
    credit_applied_minor_exact: Decimal
    credit_applied_minor: int
    amount_due_minor: int


@dataclass(frozen=True)
class RatingBuild:
    """What one dbt build gave, per case name."""

    rated: dict[str, list[RatedRow]]
    invoice_lines: dict[str, list[InvoiceLineRow]]
    invoice_credits: dict[str, list[InvoiceCreditRow]]
    warehouse: Path  # the scratch warehouse (its file name is the database name in the SQL)
    compiled_models: Path  # dbt's compiled SQL of the project's models, as built

    def compiled_sql(self, model: str) -> str:
        """A model's SELECT as dbt compiled it for this build (relations fully qualified)."""
        (path,) = [
            path
            for path in self.compiled_models.rglob(f"{model}.sql")
            if not any(part.endswith(".yml") for part in path.parts)  # (tests' compiled SQL)
        ]
        return path.read_text()


class DbtFailed(AssertionError):
    pass


def write_tables(
    conn: duckdb.DuckDBPyConnection,
    definitions: dict[str, str],
    tables: dict[str, Iterable[Sequence[object]]],
) -> None:
    """Each table of ``definitions`` (name -> column list) created afresh in ``main``, holding
    its rows from ``tables`` (none when absent)."""
    for name, columns in definitions.items():
        conn.execute(f"create or replace table main.{name} ({columns})")
        rows = list(tables.get(name, ()))
        if rows:
            marks = ", ".join("?" for _ in rows[0])
            conn.executemany(f"insert into main.{name} values ({marks})", rows)


def write_inputs(path: Path, tables: dict[str, Iterable[Sequence[object]]]) -> None:
    with duckdb.connect(str(path)) as conn:
        write_tables(conn, INPUT_TABLES, tables)


RATING_MODELS = (
    "billable_usage_daily",
    "customer_billing_periods",
    "minimum_spend_period",
    "invoice_line_tiers",
    "invoice_lines",
    "invoice_credits",
)


def build_rating(path: Path, work_dir: Path) -> None:
    """``dbt build`` of the rating and invoice models (their unit and data tests too, among them
    that a tiered charge's tiers add up to it) on the scratch warehouse."""
    result = run_dbt("build", "--select", *RATING_MODELS, warehouse=path, work_dir=work_dir)
    if result.returncode != 0:
        raise DbtFailed(result.stdout[-6000:] + result.stderr[-2000:])


def _read_by_customer(conn: duckdb.DuckDBPyConnection, query: str) -> dict[str, list[tuple]]:
    found: dict[str, list[tuple]] = {}
    for customer_id, *row in conn.execute(query).fetchall():
        found.setdefault(customer_id, []).append(tuple(row))
    return found


def rate_cases(cases: Sequence[Case], work_dir: Path) -> RatingBuild:
    """Every case as its own customer, plan and meter in one warehouse, rated and invoiced by one
    dbt build; what it gave by case name."""
    names = {f"cus_{number:05d}": case for number, case in enumerate(cases)}
    charges, tiers, plan_days, meters, usage, cycles = [], [], [], [], [], []
    plans, fee_lines, credits = [], [], []
    for customer, case in names.items():
        plan_id, meter_id = f"plan_{customer}", f"meter_{customer}"
        terms = case.invoice
        if terms is not None:
            plans.append((plan_id, plan_id, "usd", 0, terms.minimum_spend_minor))
            for period_start, line_type, amount in terms.fee_lines:
                fee_lines.append(
                    (
                        customer,
                        f"sub_{customer}",
                        period_start,
                        line_type,
                        plan_id,
                        "usd",
                        0,
                        0,
                        amount,
                    )
                )
            for number, (usage_date, amount) in enumerate(terms.credit_applications):
                credits.append(
                    (
                        f"grant_{number % 2}",
                        customer,
                        meter_id,
                        usage_date,
                        billing_period_of(usage_date)[0],
                        "usd",
                        amount,
                    )
                )
        meters.append((meter_id, "model_call", "x", None, "sum", "input_tokens", "unit", case.name))
        plan_days.append(
            (customer, f"sub_{customer}", plan_id, "usd", date(2000, 1, 1), date(9999, 12, 31))
        )
        cycles.append((customer, CALENDAR_MONTH_ANCHOR_DAY, 0))
        for row in case.charge_rows:
            charges.append(
                (
                    plan_id,
                    meter_id,
                    row["effective_from"],
                    row["currency"],
                    row["charge_model"],
                    int(row["included_units"] or 0),
                    *(
                        row[column] or None
                        for column in (
                            "unit_price_minor",
                            "package_size_units",
                            "package_price_minor",
                            "percentage_rate",
                            "fixed_fee_minor",
                        )
                    ),
                )
            )
        for row in case.tier_rows:
            tiers.append(
                (
                    plan_id,
                    meter_id,
                    row["effective_from"],
                    row["up_to_units"] or None,
                    row["unit_price_minor"],
                    row["flat_fee_minor"] or "0",
                )
            )
        for day in case.usage:
            period_start, _ = billing_period_of(day.usage_date)
            usage.append(
                (
                    customer,
                    meter_id,
                    day.usage_date,
                    period_start,
                    "x",
                    day.event_count,
                    day.used_units,
                )
            )
    path = work_dir / "rating.duckdb"
    write_inputs(
        path,
        {
            "price_book_meters": meters,
            "price_book_charges": charges,
            "price_book_charge_tiers": tiers,
            "int_customer_plan_days": plan_days,
            "int_meter_usage_daily": usage,
            "int_customer_billing_cycles": cycles,
            "price_book_plans": plans,
            "subscription_fee_lines": fee_lines,
            "stg_billing__credit_applications": credits,
        },
    )
    build_rating(path, work_dir)
    with duckdb.connect(str(path), read_only=True) as conn:
        rated_rows = _read_by_customer(
            conn,
            "select customer_id, meter_id, usage_date, quantity_units, amount_minor_exact, "
            "period_to_date_amount_minor_exact, is_priced from main.billable_usage_daily "
            "order by customer_id, meter_id, usage_date",
        )
        line_rows = _read_by_customer(
            conn,
            "select customer_id, billing_period_start_date, line_type, amount_minor_exact, "
            "amount_minor, rounding_minor from main.invoice_lines order by all",
        )
        credit_rows = _read_by_customer(
            conn,
            "select customer_id, billing_period_start_date, usage_amount_minor, "
            "credit_applied_minor_exact, credit_applied_minor, amount_due_minor "
            "from main.invoice_credits order by all",
        )
    return RatingBuild(
        rated={
            case.name: [RatedRow(customer, *row) for row in rated_rows.get(customer, [])]
            for customer, case in names.items()
        },
        invoice_lines={
            case.name: [InvoiceLineRow(*row) for row in line_rows.get(customer, [])]
            for customer, case in names.items()
        },
        invoice_credits={
            case.name: [InvoiceCreditRow(*row) for row in credit_rows.get(customer, [])]
            for customer, case in names.items()
        },
        warehouse=path,
        compiled_models=work_dir / "dbt_target" / "compiled" / "meterbook" / "models",
    )
