"""A month of sample data through the whole pipeline while the local Stripe injects faults: Stripe
ends with exactly the usage the pipeline rated, per customer, meter and day; a re-run sends none.

Slow: `make test` and CI run a reduced form (the month's first 8 days, which still carry late
events of the month before, so both periods are invoiced); ``METERBOOK_TEST_SCALE=full`` runs the
whole month (30 days)."""

from __future__ import annotations

import os
from collections import Counter
from datetime import UTC, date, datetime

import duckdb
import pytest

from ingestion.sample_data import generate_sample_data
from orchestration.runner import prepare_instance, run_days
from orchestration.settings import DBT_PROJECT_DIR, get_settings
from stripe_local.faults import FaultPlan
from stripe_local.server import LocalStripeServer
from tests.conftest import PipelineEnvironment

FULL_SCALE = os.environ.get("METERBOOK_TEST_SCALE") == "full"
FIRST, LAST = date(2026, 10, 1), date(2026, 10, 30 if FULL_SCALE else 8)
FAULTS = "rate=0.2,kinds=429+500+timeout+lost,seed=9,timeout=0.6"


def rated_quantities() -> dict[tuple[str, str, date], int]:
    with duckdb.connect(str(get_settings().warehouse_path), read_only=True) as conn:
        rows = conn.execute(
            "select customer_id, meter_id, usage_date, quantity_units from billable_usage_daily "
            "where is_priced and quantity_units > 0"
        ).fetchall()
    return {(c, m, d): int(q) for c, m, d, q in rows}


def metered_at_stripe(server: LocalStripeServer) -> dict[tuple[str, str, date], int]:
    totals: Counter[tuple[str, str, date]] = Counter()
    for event in server.store.meter_events():
        day = datetime.fromtimestamp(event["timestamp"], UTC).date()
        key = (event["payload"]["stripe_customer_id"], event["event_name"], day)
        totals[key] += int(event["payload"]["value"])
    return dict(totals)


def run_until_sent(attempts: int = 3) -> int:
    """Run the month as one backfill; a run that leaves writes pending fails, and the next run
    (as tomorrow's would) sends them. Returns how many runs it took."""
    for number in range(1, attempts + 1):
        outcomes = run_days(get_settings(), FIRST, LAST, chunk_days=31)
        if all(outcome.success for outcome in outcomes):
            return number
    raise AssertionError(f"still failing after {attempts} runs")


@pytest.mark.slow
def test_a_month_reaches_stripe_exactly_once_through_faults(
    pipeline_env: PipelineEnvironment, monkeypatch: pytest.MonkeyPatch
) -> None:
    generate_sample_data(
        pipeline_env.data_dir,
        start_date=FIRST,
        days=(LAST - FIRST).days + 1,
        customers=15,
        events_per_day=150,
        seed=21,
        price_book_dir=DBT_PROJECT_DIR / "seeds",
    )
    faults = FaultPlan.parse(FAULTS)
    with LocalStripeServer(
        db_path=pipeline_env.data_dir / "stripe_local.sqlite3",
        now="2026-11-02T00:00:00Z",
        seed_customers_csv=pipeline_env.data_dir / "raw" / "stripe" / "customers.csv",
        faults=faults,
    ) as server:
        monkeypatch.setenv("METERBOOK_STRIPE_API_BASE", server.url)
        monkeypatch.setenv("METERBOOK_STRIPE_TIMEOUT_SECONDS", "0.3")
        prepare_instance(get_settings())
        run_until_sent()
        assert metered_at_stripe(server) == rated_quantities()  # none missing, none twice
        with duckdb.connect(str(get_settings().warehouse_path), read_only=True) as conn:
            accuracy = conn.execute(
                "select invoices_compared, matching_share, total_abs_difference_minor "
                "from invoice_accuracy order by billing_period_start_date"
            ).fetchall()
            invoiced = conn.execute(
                "select count(distinct customer_id) from invoice_lines where line_type = 'usage' "
                "group by billing_period_start_date order by billing_period_start_date"
            ).fetchall()
            discrepancies = conn.execute(
                "select count(*) from reconciliation_discrepancies"
            ).fetchone()
        # Every invoice of both periods (September's late events, October) exact to the cent,
        # Stripe's counts read back through the same faults.
        assert [(n, 1, 0) for (n,) in invoiced] == accuracy
        assert discrepancies == (0,)
        injected = sum(faults.describe()["injected"].values())
        assert injected >= 0.1 * (server.store.counter("requests") + injected)
        events = server.store.meter_event_count()
        assert run_until_sent() == 1
        assert server.store.meter_event_count() == events  # the re-run sent nothing new
