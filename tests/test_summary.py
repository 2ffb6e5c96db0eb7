"""The demo summary's spend-cap lines, on a hand-made entitlements table."""

from __future__ import annotations

import duckdb

from orchestration.summary import CappedCustomer, _capped_customers


def test_a_cap_reached_in_an_earlier_period_is_listed_after_the_new_period_starts() -> None:
    with duckdb.connect() as conn:
        conn.execute(
            "create table customer_entitlements_daily (customer_id varchar, "
            "billing_period_start_date date, usage_date date, entitlement_state varchar)"
        )
        conn.execute(
            """
            insert into customer_entitlements_daily values
                ('cus_a', '2026-11-01', '2026-11-29', 'warning'),
                ('cus_a', '2026-11-01', '2026-11-30', 'capped'),
                ('cus_a', '2026-12-01', '2026-12-01', 'ok'),
                ('cus_b', '2026-11-01', '2026-11-30', 'ok'),
                ('cus_b', '2026-12-01', '2026-12-01', 'capped'),
                ('cus_c', '2026-11-01', '2026-11-30', 'warning')
            """
        )
        capped = _capped_customers(conn)
    assert capped == [
        CappedCustomer("cus_a", "2026-11-01", "2026-11-30", capped_last_day=False),
        CappedCustomer("cus_b", "2026-12-01", "2026-12-01", capped_last_day=True),
    ]
