"""The credit grants and allocation in the warehouse (billing.credit_*): stored exactly, read
back as written, replaced whole."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal

import duckdb

from ledger.credit_applications import LedgerGrant
from ledger.postings import CreditKind
from orchestration.credit_tables import read_grants, write_allocation, write_grants
from pricing.credits import CreditGrant, UsageCharge, apply_credits

GRANT = LedgerGrant(
    CreditGrant(
        grant_id="api-g:1",
        customer_id="cus_a",
        currency="usd",
        amount_minor=Decimal("10.5"),
        effective_at=datetime(2026, 10, 1, tzinfo=UTC),
        expires_at=datetime(2026, 10, 3, tzinfo=UTC),
        priority=5,
        meters=frozenset({"m1", "m2"}),
    ),
    CreditKind.PREPAID,
)


def test_the_allocation_is_stored_exactly_and_replaced_whole() -> None:
    conn = duckdb.connect()
    charge = UsageCharge(
        "cus_a", "m1", date(2026, 10, 1), date(2026, 10, 1), "usd", Decimal("3.000000000001")
    )
    allocation = apply_credits([GRANT.terms], [charge], rated_through=date(2026, 10, 5))
    assert write_grants(conn, [GRANT]) == 1
    assert read_grants(conn) == [GRANT]
    assert write_allocation(conn, allocation) == 2
    assert conn.execute(
        "select grant_id, credit_kind, amount_minor, expires_at = timestamptz '2026-10-03 00:00Z', "
        "priority, meters from billing.credit_grants"
    ).fetchall() == [("api-g:1", "prepaid", Decimal("10.5"), True, 5, ["m1", "m2"])]
    assert conn.execute(
        "select meter_id, usage_date, amount_minor from billing.credit_applications"
    ).fetchall() == [("m1", date(2026, 10, 1), Decimal("3.000000000001"))]
    assert conn.execute("select remaining_minor from billing.credit_expiries").fetchall() == [
        (Decimal("7.499999999999"),)
    ]
    # A run with no grants leaves no rows behind.
    assert write_grants(conn, []) == 0
    assert write_allocation(conn, apply_credits([], [], rated_through=None)) == 0
    for table in ("credit_grants", "credit_applications", "credit_expiries"):
        assert conn.execute(f"select count(*) from billing.{table}").fetchone() == (0,)
