"""The harness's own comparisons: what counts as the same state after runs in another order.

Days billed out of order can send usage and take it back (a ``unique_count`` value first seen on
a day billed later moves to that day); a run in order never sends it. Usage that nets to zero is
no usage, at Stripe as in the outbox's totals, as a ledger slot that nets to zero is no posting.
"""

from __future__ import annotations

from pathlib import Path

import duckdb

from stripe_sync.replication import REPLICA_SQL
from tests.reliability.pipeline_state import _stripe_usage, _warehouse_state


def _event(customer: str, meter: str, value: int) -> dict[str, object]:
    return {
        "event_name": meter,
        "timestamp": 1_790_000_000,  # 2026-09-21
        "payload": {"stripe_customer_id": customer, "value": str(value)},
    }


def test_stripe_usage_sent_then_taken_back_is_no_usage() -> None:
    usage = _stripe_usage(
        [
            _event("cus_a", "tools_used", 1),
            _event("cus_a", "tools_used", -1),
            _event("cus_b", "tools_used", 2),
        ]
    )
    assert usage == (("cus_b", "tools_used", "2026-09-21", 2),)


def _outbox_slots_content(path: Path, rows: list[tuple[str, str, int, int, int, int]]) -> str:
    with duckdb.connect(str(path)) as conn:
        conn.execute(REPLICA_SQL)
        for row in rows:
            conn.execute(
                "insert into stripe_sync.outbox_slots values (?, ?, ?, ?, ?, ?, null, null)", row
            )
    _, content = _warehouse_state(path)
    return dict(content)["stripe_sync.outbox_slots"]


def test_an_outbox_slot_that_nets_to_zero_is_left_out_of_the_content(tmp_path: Path) -> None:
    kept = ("meter_event", "cus_b:tools_used:2026-09-21", 1, 2, 0, 0)
    taken_back = ("meter_event", "cus_a:tools_used:2026-09-21", 2, 0, 0, 0)
    pending = ("meter_event", "cus_c:tools_used:2026-09-21", 1, 0, 3, 0)
    in_order = _outbox_slots_content(tmp_path / "in_order.duckdb", [kept, pending])
    out_of_order = _outbox_slots_content(
        tmp_path / "out_of_order.duckdb", [kept, taken_back, pending]
    )
    assert out_of_order == in_order
    assert in_order.startswith("2 rows")
    # A slot still pending is content: it is usage Stripe has not received yet.
    assert _outbox_slots_content(tmp_path / "sent_only.duckdb", [kept]) != in_order
