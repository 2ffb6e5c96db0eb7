"""Reconciliation finds what Stripe got wrong: the local Stripe acknowledges every meter event
but silently drops 1 % and applies another 1 % twice; finance's tables must list exactly the
charges and days those events touched, with the right differences, and say the invoices are
no longer all exact."""

from __future__ import annotations

import urllib.request
from collections import Counter
from datetime import UTC, date, datetime
from decimal import ROUND_HALF_UP, Decimal

import dagster as dg
import duckdb
import pytest

from ingestion.sample_data import generate_sample_data
from orchestration.runner import prepare_instance, run_days
from orchestration.settings import DBT_PROJECT_DIR, get_settings
from orchestration.summary import collect_summary
from pricing.charges import period_amount
from pricing.periods import billing_period_of
from pricing.price_book import load_price_book
from stripe_local.server import LocalStripeServer
from tests.conftest import PipelineEnvironment

FIRST, LAST = date(2026, 10, 1), date(2026, 10, 12)
CORRUPTION = "drop=0.01,double=0.01,seed=4"

Slot = tuple[str, str, date]  # customer, meter, usage date
Charge = tuple[str, str, date]  # customer, meter, billing period start


def _round(amount: Decimal) -> int:
    """The documented rule: half away from zero, once per invoice line."""
    return int(amount.quantize(Decimal(1), rounding=ROUND_HALF_UP))


def _corrupted_units(server: LocalStripeServer) -> Counter[Slot]:
    """Per slot, the units Stripe counted minus the units it was sent."""
    differences: Counter[Slot] = Counter()
    for event in server.store.meter_event_corruptions():
        day = datetime.fromtimestamp(event["timestamp"], UTC).date()
        slot = (event["customer"], event["event_name"], day)
        differences[slot] += int(event["applied"]) - int(event["sent"])
    return differences


def _period_start(anchor_days: dict[str, int], customer: str, day: date) -> date:
    """The first day of the customer's billing period holding ``day`` (the sample data anchors
    some customers' cycles: pricing.periods)."""
    return billing_period_of(day, anchor_days.get(customer, 1))[0]


def _stripe_worth(corrupted: Counter[Slot], anchor_days: dict[str, int]) -> dict[Slot, Decimal]:
    """Per corrupted slot: the day's charge on Stripe's period-to-date count, minus through
    the day before, minus the rated amount (pricing.charges, not the dbt model)."""
    book = load_price_book(DBT_PROJECT_DIR / "seeds")
    with duckdb.connect(str(get_settings().warehouse_path), read_only=True) as conn:
        rows = conn.execute(
            "select customer_id, meter_id, usage_date, plan_id, quantity_units, "
            "amount_minor_exact from billable_usage_daily where is_priced "
            "order by customer_id, meter_id, usage_date"
        ).fetchall()
    stripe_to_date: Counter[Charge] = Counter()
    worth = {}
    for customer, meter, day, plan, quantity, rated in rows:
        dated = book.charge_on(plan_id=plan, meter_id=meter, day=day)
        assert dated is not None
        period = (customer, meter, _period_start(anchor_days, customer, day))
        before = stripe_to_date[period]
        stripe_to_date[period] += quantity + corrupted.get((customer, meter, day), 0)
        if (customer, meter, day) in corrupted and dated.charge.charge_model == "percentage":
            # No Stripe price expresses it: the day is left unvalued on Stripe's side
            # (usage_reconciliation_daily), so it drops out of Stripe's sum for the invoice.
            worth[(customer, meter, day)] = -rated
        elif (customer, meter, day) in corrupted:
            day_worth = period_amount(
                dated.charge, used_units=stripe_to_date[period]
            ) - period_amount(dated.charge, used_units=before)
            worth[(customer, meter, day)] = day_worth - rated
    return worth


@pytest.mark.slow
def test_dropped_and_doubled_meter_events_show_as_discrepancies(
    pipeline_env: PipelineEnvironment, monkeypatch: pytest.MonkeyPatch
) -> None:
    generated = generate_sample_data(
        pipeline_env.data_dir,
        start_date=FIRST,
        days=(LAST - FIRST).days + 1,
        customers=12,
        events_per_day=150,
        seed=33,
        price_book_dir=DBT_PROJECT_DIR / "seeds",
    )
    with LocalStripeServer(
        db_path=pipeline_env.data_dir / "stripe_local.sqlite3",
        now="2026-10-14T00:00:00Z",
        seed_customers_csv=pipeline_env.data_dir / "raw" / "stripe" / "customers.csv",
    ) as server:
        request = urllib.request.Request(
            f"{server.url}/_local/corruption", data=CORRUPTION.encode(), method="POST"
        )
        urllib.request.urlopen(request).close()
        monkeypatch.setenv("METERBOOK_STRIPE_API_BASE", server.url)
        prepare_instance(get_settings())
        outcomes = run_days(get_settings(), FIRST, LAST, chunk_days=31)
        assert all(outcome.success for outcome in outcomes)  # a discrepancy warns, not blocks
        corrupted = _corrupted_units(server)

    kinds = Counter(units > 0 for units in corrupted.values())
    assert kinds[True] >= 1 and kinds[False] >= 1, corrupted  # some doubled, some dropped
    with duckdb.connect(str(get_settings().warehouse_path), read_only=True) as conn:
        daily = conn.execute(
            "select customer_id, meter_id, usage_date, stripe_difference_quantity, "
            "stripe_difference_minor_exact, unit_price_minor, status, charge_model "
            "from usage_reconciliation_daily where status <> 'ok'"
        ).fetchall()
        rated = conn.execute(
            "select customer_id, meter_id, billing_period_start_date, amount_minor_exact, "
            "amount_minor from invoice_lines where line_type = 'usage'"
        ).fetchall()
        discrepancies = conn.execute(
            "select customer_id, meter_id, billing_period_start_date, meterbook_amount_minor, "
            "stripe_amount_minor, stripe_difference_minor, ledger_difference_minor, "
            "likely_cause, days_stripe_differs from reconciliation_discrepancies"
        ).fetchall()
        accuracy = conn.execute(
            "select billing_period_start_date, invoices_compared, invoices_matching, "
            "matching_share, total_abs_difference_minor, revenue_at_risk_minor "
            "from invoice_accuracy"
        ).fetchall()

    # Per day: exactly the corrupted slots, each off by what Stripe's count is worth under the
    # charge (the Python reference on Stripe's period to date) minus what was rated.
    assert {(c, m, d): q for c, m, d, q, *_ in daily} == dict(corrupted)
    anchor_days = generated.billing_anchor_days
    assert anchor_days  # some customers' periods are anchored, the rest calendar months
    worth = _stripe_worth(corrupted, anchor_days)
    for customer, meter, day, units, difference, price, status, charge_model in daily:
        if charge_model == "percentage":
            assert difference is None  # unvalued: no Stripe price for it
        else:
            assert difference == worth[(customer, meter, day)]
        if price is not None:  # a per-unit charge: simply the units at the price
            assert difference == units * price
        assert status == ("extra_usage" if units > 0 else "missing_usage")
    assert any(price is None for *_, price, _, model in daily if model != "percentage"), (
        "no tiered or package charge was hit"
    )

    # Per invoice charge: exactly the charges holding a corrupted day, with their differences.
    extra_by_charge: Counter[Charge] = Counter()
    for (customer, meter, day), difference in worth.items():
        extra_by_charge[(customer, meter, _period_start(anchor_days, customer, day))] += difference
    lines = {(c, m, period): (exact, whole) for c, m, period, exact, whole in rated}
    expected = {
        charge: _round(lines[charge][0] + extra) - lines[charge][1]
        for charge, extra in extra_by_charge.items()
    }
    listed = {(c, m, period): diff for c, m, period, _, _, diff, *_ in discrepancies}
    assert listed == expected
    for customer, meter, period, _, _, _, ledger_diff, cause, days in discrepancies:
        assert ledger_diff == 0  # the ledger holds what Meterbook rated
        in_charge = {
            day: units
            for (c, m, day), units in corrupted.items()
            if (c, m, _period_start(anchor_days, c, day)) == (customer, meter, period)
        }
        values = list(in_charge.values())
        assert cause == (
            "missing_and_extra_usage"
            if min(values) < 0 < max(values)
            else ("extra_usage" if values[0] > 0 else "missing_usage")
        )
        assert days == ", ".join(f"{day} ({units})" for day, units in sorted(in_charge.items()))

    # Per period: the invoices with a discrepancy are not exact; the differences add up.
    accuracy_by_period = {row[0]: row[1:] for row in accuracy}
    for period in {period for _, _, period, _, _ in rated}:
        customers = {c for c, _, p, _, _ in rated if p == period}
        affected = {c for c, _, p in expected if p == period}
        compared, matching, share, total_abs, at_risk = accuracy_by_period[period]
        differences = [d for (_, _, p), d in expected.items() if p == period]
        assert (compared, matching) == (len(customers), len(customers) - len(affected))
        assert 0 <= share <= 1 and (share == 1) == (matching == compared)
        assert total_abs == sum(abs(d) for d in differences)
        assert at_risk == sum(-d for d in differences if d < 0)
    # Fewer than all of the invoices of the periods holding a corrupted day are exact.
    assert all(accuracy_by_period[p][1] < accuracy_by_period[p][0] for _, _, p in expected)

    # The run's check shows the same at a glance in the Dagster UI, as a warning.
    history = prepare_instance(get_settings()).event_log_storage.get_asset_check_execution_history(
        dg.AssetCheckKey(dg.AssetKey("invoice_accuracy"), "reconciliation_summary"), limit=1
    )
    evaluation = history[0].event.dagster_event.event_specific_data  # type: ignore[union-attr]
    assert evaluation.passed is False
    assert evaluation.severity == dg.AssetCheckSeverity.WARN
    assert evaluation.metadata["invoices_not_exact"].value == sum(
        compared - matching for compared, matching, *_ in accuracy_by_period.values()
    )
    table = evaluation.metadata["largest_discrepancies"].value
    biggest = max(expected, key=lambda charge: abs(expected[charge]))
    assert f"| {biggest[0]} | {biggest[2]} | {biggest[1]} |" in table  # customer, period, meter

    # The run's summary (what `meterbook demo` prints) names the sample's plan change, with the
    # prorations on its invoice, and the charge models of the plans the customers are on.
    figures = collect_summary(str(get_settings().warehouse_path), pipeline_env.ledger_url)
    (change,) = generated.plan_changes
    (shown,) = figures.plan_changes
    changed_at = datetime.fromtimestamp(change["changed_at"], UTC).strftime("%Y-%m-%d %H:%M:%S")
    assert (shown.customer_id, shown.from_plan, shown.to_plan, shown.changed_at) == (
        change["customer_id"],
        change["from_plan"],
        change["to_plan"],
        changed_at,
    )
    with duckdb.connect(str(get_settings().warehouse_path), read_only=True) as conn:
        (prorations,) = conn.execute(
            "select coalesce(sum(amount_minor), 0) from invoice_lines where customer_id = ? "
            "and line_type in ('proration_charge', 'proration_credit')",
            [change["customer_id"]],
        ).fetchone() or (None,)
        plans = {
            plan
            for (plan,) in conn.execute(
                "select distinct plan_id from billable_usage_daily"
            ).fetchall()
        }
    assert shown.proration_minor == prorations
    models = {(m.charge_model, m.with_allowance) for m in figures.charge_models}
    book = load_price_book(DBT_PROJECT_DIR / "seeds")
    assert models == {
        (dated.charge.charge_model, dated.charge.included_units > 0)
        for (plan, _), charges in book.charges.items()
        if plan in plans
        for dated in charges
    }
    assert "scale" in plans  # so the tiered, package and allowance models are all there
