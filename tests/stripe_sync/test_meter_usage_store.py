"""Storing what Stripe's meters counted: a read replaces exactly the pairs and days it covered."""

from __future__ import annotations

from datetime import date

import duckdb

from stripe_sync.meter_usage import MeteredDay, store_meter_usage


def _stored(conn: duckdb.DuckDBPyConnection) -> list[tuple[str, str, date, int]]:
    return conn.execute(
        "select customer_id, meter_id, usage_date, quantity from stripe_sync.meter_usage_daily "
        "order by all"
    ).fetchall()


def test_a_read_replaces_its_pairs_and_days_and_leaves_the_rest() -> None:
    conn = duckdb.connect()
    october = (date(2026, 10, 1), date(2026, 11, 1))
    store_meter_usage(
        conn,
        [("cus_a", "requests"), ("cus_b", "requests")],
        *october,
        [
            MeteredDay("cus_a", "requests", date(2026, 10, 3), 5),
            MeteredDay("cus_a", "requests", date(2026, 10, 4), 2**40),
            MeteredDay("cus_b", "requests", date(2026, 10, 3), 7),
        ],
    )
    # cus_a read again: its 4th now counts nothing (left out); cus_b not read keeps its count.
    written = store_meter_usage(
        conn,
        [("cus_a", "requests")],
        *october,
        [MeteredDay("cus_a", "requests", date(2026, 10, 3), 6)],
    )
    assert written == 1
    assert _stored(conn) == [
        ("cus_a", "requests", date(2026, 10, 3), 6),
        ("cus_b", "requests", date(2026, 10, 3), 7),
    ]
    # A read of nothing (no pairs, nothing counted) changes nothing.
    assert store_meter_usage(conn, [], *october, []) == 0
    assert len(_stored(conn)) == 2
    # A read of a pair with nothing counted clears it.
    store_meter_usage(conn, [("cus_b", "requests")], *october, [])
    assert _stored(conn) == [("cus_a", "requests", date(2026, 10, 3), 6)]


def test_a_large_read_is_stored_whole() -> None:
    conn = duckdb.connect()
    pairs = [(f"cus_{n:05d}", f"meter_{m}") for n in range(2_000) for m in range(12)]
    metered = [MeteredDay(c, m, date(2026, 10, 5), n) for n, (c, m) in enumerate(pairs)]
    assert store_meter_usage(conn, pairs, date(2026, 10, 1), date(2026, 11, 1), metered) == 24_000
    assert conn.execute(
        "select count(*), sum(quantity) from stripe_sync.meter_usage_daily"
    ).fetchone() == (24_000, sum(range(24_000)))
