"""The rating inputs the API shows (allowance used and left, the tiers of the charge in force,
the period-to-date amounts behind a day's amount), read from a published snapshot of a small
warehouse written here with the columns the billing marts have."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from pathlib import Path

import duckdb

from api import views
from api.snapshot import open_snapshot, publish_snapshot

CUSTOMER = "cus_alpha"


def rated_warehouse(path: Path) -> None:
    """Three days of a graduated charge with 1,000 included units: 600, 700 and 300 units."""
    with duckdb.connect(str(path)) as conn:
        conn.execute(
            """
            create table billable_usage_daily as
            select * from (values
                ('cus_alpha', 'm_tokens', date '2026-10-01', 'scale', 'sub_1', 600, 1,
                 cast(null as decimal(38, 12)), cast(0 as decimal(38, 12)), 'usd', true,
                 date '2026-10-01', 'graduated', date '2025-01-01', 1000, 600,
                 cast(0 as decimal(38, 12)), cast(0 as decimal(38, 12))),
                ('cus_alpha', 'm_tokens', date '2026-10-02', 'scale', 'sub_1', 700, 1,
                 null, 30, 'usd', true, date '2026-10-01', 'graduated', date '2025-01-01', 1000,
                 1300, 30, 0),
                ('cus_alpha', 'm_tokens', date '2026-10-03', 'scale', 'sub_1', 300, 1,
                 null, 20, 'usd', true, date '2026-10-01', 'graduated', date '2025-01-01', 1000,
                 1600, 50, 30),
                ('cus_alpha', 'm_calls', date '2026-10-03', 'scale', 'sub_1', 5, 5,
                 0.1, 0.5, 'usd', true, date '2026-10-01', 'per_unit', date '2025-01-01', 0, 5,
                 0.5, 0)
            ) as t(customer_id, meter_id, usage_date, plan_id, subscription_id, quantity_units,
                   event_count, unit_price_minor, amount_minor_exact, currency, is_priced,
                   billing_period_start_date, charge_model, charge_effective_from,
                   included_units, period_to_date_units, period_to_date_amount_minor_exact,
                   prior_period_to_date_amount_minor_exact)
            """
        )
        conn.execute(
            """
            create table price_book_charge_tiers as select * from (values
                ('scale', 'm_tokens', date '2025-01-01', 500, 0.1, 0),
                ('scale', 'm_tokens', date '2025-01-01', null, 0.05, 0),
                ('scale', 'm_tokens', date '2026-11-01', null, 0.01, 0)
            ) as t(plan_id, meter_id, effective_from, up_to_units, unit_price_minor,
                   flat_fee_minor)
            """
        )
        conn.execute(
            """
            create table customer_entitlements_daily as select * from (values
                ('cus_alpha', date '2026-10-02', 'warning', cast(90 as decimal(38, 12)),
                 cast(100 as decimal(38, 12)), cast(0.8 as decimal(6, 4)),
                 cast(0 as decimal(38, 12)), cast(300 as decimal(38, 12))),
                ('cus_alpha', date '2026-10-03', 'capped', 120, 100, 0.8, 20, 300)
            ) as t(customer_id, usage_date, entitlement_state, period_to_date_spend_minor,
                   spend_cap_minor, warning_share, over_cap_minor, credit_balance_minor)
            """
        )
        publish_snapshot(conn, path.parent / "api_snapshot")


def test_allowance_used_and_left_as_of_the_last_rated_day(tmp_path: Path) -> None:
    rated_warehouse(tmp_path / "warehouse.duckdb")
    with open_snapshot(tmp_path / "api_snapshot") as snapshot:
        state = views.warehouse_state(snapshot, CUSTOMER, date(2026, 10, 15))
        # Another period: nothing rated there yet.
        november = views.warehouse_state(snapshot, CUSTOMER, date(2026, 11, 15))
    assert state["allowances"] == [
        {
            "meter_id": "m_tokens",
            "through_date": date(2026, 10, 3),
            "included_units": 1000,
            "used_units": 1000,
            "left_units": 0,
        }
    ]
    assert november["allowances"] == []
    # The spend cap as of the period's last rated day; none in a period not rated yet.
    assert state["entitlement"] == {
        "through_date": date(2026, 10, 3),
        "state": "capped",
        "spend_minor": Decimal(120),
        "spend_cap_minor": Decimal(100),
        "warning_share": Decimal("0.8"),
        "over_cap_minor": Decimal(20),
        "credit_balance_minor": Decimal(300),
    }
    assert november["entitlement"] is None


def test_a_daysrating_inputs_name_the_tiers_in_force_and_the_allowance(tmp_path: Path) -> None:
    rated_warehouse(tmp_path / "warehouse.duckdb")
    with open_snapshot(tmp_path / "api_snapshot") as snapshot:
        (second_day,) = snapshot.rows(
            "select * from billable_usage_daily where usage_date = date '2026-10-02'"
        )
        inputs = views.rating_inputs(
            snapshot, second_day, second_day["customer_id"], "m_tokens", date(2026, 10, 2)
        )
        (calls,) = snapshot.rows("select * from billable_usage_daily where meter_id = 'm_calls'")
        per_unit = views.rating_inputs(
            snapshot, calls, calls["customer_id"], "m_calls", calls["usage_date"]
        )
    # Only the tiers of the charge in force (effective 2025-01-01), in order, open tier last.
    assert [(t["up_to_units"], t["unit_price_minor"]) for t in inputs["tiers"]] == [
        (500, Decimal("0.100000000000")),
        (None, Decimal("0.050000000000")),
    ]
    assert inputs["allowance"] == {
        "included_units": 1000,
        "used_through_day": 1000,
        "left_after_day": 0,
    }
    assert (
        inputs["period_to_date_amount_minor_exact"]
        - inputs["prior_period_to_date_amount_minor_exact"]
        == inputs["amount_minor_exact"]
    )
    assert (per_unit["tiers"], per_unit["allowance"]) == ([], None)


def test_the_current_period_follows_the_customers_billing_anchor(tmp_path: Path) -> None:
    """A customer anchored on the 31st is in the period 28 February to 31 March on 15 March,
    and ?period=2027-02 means the period that begins in February; without a billing cycle in
    the snapshot, calendar months."""
    path = tmp_path / "warehouse.duckdb"
    rated_warehouse(path)
    with duckdb.connect(str(path)) as conn:
        conn.execute(
            "create table int_customer_billing_cycles as select * from (values "
            "('cus_alpha', 31, 1)) as t(customer_id, billing_anchor_day, anchor_day_count)"
        )
        publish_snapshot(conn, tmp_path / "api_snapshot")
    with open_snapshot(tmp_path / "api_snapshot") as snapshot:
        today = views.warehouse_state(snapshot, CUSTOMER, date(2027, 3, 15))
        february = views.warehouse_state(
            snapshot, CUSTOMER, date(2027, 3, 15), beginning_in=date(2027, 2, 1)
        )
        other = views.warehouse_state(snapshot, "cus_other", date(2027, 3, 15))
    assert today["current_period"] == {
        "start_date": date(2027, 2, 28),
        "end_date": date(2027, 3, 31),
    }
    assert february["current_period"] == today["current_period"]
    assert other["current_period"] == {
        "start_date": date(2027, 3, 1),
        "end_date": date(2027, 4, 1),
    }
