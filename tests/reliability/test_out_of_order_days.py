"""Days run out of order never send Stripe more usage than is rated in the end.

The re-runs harness found it (``test_reruns.py``, reduced: day 2 run before day 1): a
conflicting copy of an event in day 2's files was accepted while day 1 had not run, its usage
was sent to Stripe, and once day 1 ran its own copy won; the rating and the ledger went down,
the meter event could not. The Stripe step now holds back a slot while an arrival day that could
still lower it has raw files not ingested (``orchestration/stripe_holds.py``).

This reproduces the case without Dagster or dbt: real ingestion of the hand fixture's two days
plus one conflicting copy, the Stripe step's planning and recording against a real outbox, and,
as the rating, the accepted output tokens per customer and day (one meter is enough here).
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path

import duckdb
import psycopg
import pytest

from ingestion.stripe_exports import load_stripe_exports
from ingestion.usage_events import ingest_usage_day
from orchestration.assets.billing import (
    StripeUsagePlan,
    plan_stripe_usage,
    record_stripe_usage_plan,
    touched_usage_dates,
)
from orchestration.stripe_holds import unsettled_customer_days
from stripe_sync import outbox
from stripe_sync.meter_events import METER_EVENT_OPERATION
from tests.hand_fixture import ALPHA, BETA, write_hand_fixture

pytestmark = pytest.mark.reliability

DAY_1 = date(2026, 10, 1)
DAY_2 = date(2026, 10, 2)
METER = "output_tokens"
# evt_a1 arrived on day 1 with 30,000 output tokens; a copy with more arrives on day 2.
CONFLICTING_COPY = {
    "event_id": "evt_a1",
    "customer_id": ALPHA,
    "event_type": "model_call",
    "occurred_at": "2026-10-01T10:00:00.000Z",
    "received_at": "2026-10-02T11:00:00.000Z",
    "properties": {
        "model": "nimbus-large",
        "input_tokens": 120_000,
        "output_tokens": 90_000,
        "cache_read_tokens": 0,
        "request_kind": "agent",
    },
}
# Stand-in for the rating: accepted output tokens per customer and usage day.
RATING_SQL = f"""
create or replace view billable_usage_daily as
select customer_id, '{METER}' as meter_id, usage_date,
       cast(date_trunc('month', usage_date) as date) as billing_period_start_date,
       'usd' as currency, 0 as amount_minor_exact, sum(output_tokens) as quantity_units,
       true as is_priced
from ingest.usage_event_lines where status = 'accepted'
group by customer_id, usage_date
"""
# A `latest` meter, as int_meter_usage_daily rates it: each day adds the change of the period's
# latest value (the output tokens of the customer's latest event so far).
LATEST_METER = "latest_output_tokens"
LATEST_RATING_SQL = f"""
create or replace view billable_usage_daily as
with daily as (
    select customer_id, usage_date,
           arg_max(output_tokens, (occurred_at, event_id)) as latest_output_tokens
    from ingest.usage_event_lines where status = 'accepted'
    group by customer_id, usage_date
)
select customer_id, '{LATEST_METER}' as meter_id, usage_date,
       cast(date_trunc('month', usage_date) as date) as billing_period_start_date,
       'usd' as currency, 0 as amount_minor_exact,
       latest_output_tokens - coalesce(lag(latest_output_tokens) over (
           partition by customer_id, date_trunc('month', usage_date) order by usage_date
       ), 0) as quantity_units,
       true as is_priced
from daily
"""


class Billing:
    """One pipeline's warehouse and outbox; ``run(day)`` ingests an arrival day, then plans
    and records Stripe usage as the ``stripe_meter_events`` asset does."""

    def __init__(
        self,
        root: Path,
        outbox_conn: psycopg.Connection,
        *,
        rating_sql: str = RATING_SQL,
        aggregation: str = "sum",
    ) -> None:
        self.raw_usage_dir = root / "raw" / "usage"
        self.warehouse = duckdb.connect(str(root / "warehouse.duckdb"))
        self.rating_sql = rating_sql
        meter = LATEST_METER if aggregation == "latest" else METER
        self.warehouse.execute(
            "create table price_book_meters as select ? as meter_id, ? as aggregation",
            [meter, aggregation],
        )
        load_stripe_exports(self.warehouse, stripe_dir=root / "raw" / "stripe")
        self.outbox = outbox_conn
        outbox.ensure_schema(outbox_conn)

    def run(self, day: date) -> StripeUsagePlan:
        ingest_usage_day(self.warehouse, raw_usage_dir=self.raw_usage_dir, arrival_date=day)
        self.warehouse.execute(self.rating_sql)
        touched = touched_usage_dates(self.warehouse, day, day + timedelta(days=1))
        plan = plan_stripe_usage(
            self.warehouse, self.outbox, raw_usage_dir=self.raw_usage_dir, touched=touched
        )
        record_stripe_usage_plan(self.outbox, plan)
        return plan

    def rated(self) -> dict[str, int]:
        rows = self.warehouse.execute(
            "select customer_id, meter_id, usage_date, quantity_units from billable_usage_daily"
        ).fetchall()
        return {f"{c}:{m}:{d.isoformat()}": int(q) for c, m, d, q in rows}

    def recorded(self) -> dict[str, int]:
        """What the outbox holds for Stripe per slot: what Stripe counts once it is sent."""
        totals = outbox.slot_totals(self.outbox, METER_EVENT_OPERATION)
        return {slot: total.quantity for slot, total in totals.items()}


@pytest.fixture
def billing(tmp_path: Path, ledger_url: str) -> Iterator[Billing]:
    write_hand_fixture(tmp_path)
    folder = tmp_path / "raw" / "usage" / f"date={DAY_2.isoformat()}" / "hour=11"
    folder.mkdir(parents=True)
    with gzip.open(folder / "part-0000.ndjson.gz", "wt", encoding="utf-8") as handle:
        handle.write(json.dumps(CONFLICTING_COPY) + "\n")
    with psycopg.connect(ledger_url, autocommit=True) as conn:
        pipeline = Billing(tmp_path, conn)
        yield pipeline
        pipeline.warehouse.close()


def test_day_2_before_day_1_sends_only_what_is_rated_once_day_1_ran(billing: Billing) -> None:
    first = billing.run(DAY_2)
    alpha_day_1 = f"{ALPHA}:{METER}:{DAY_1.isoformat()}"
    # The case itself: with day 1 outstanding, the conflicting copy is what is rated now.
    assert billing.rated()[alpha_day_1] == 90_000
    # Every slot day 2 touched waits for day 1 (its own copies may lie there): nothing sent.
    assert first.intents == []
    assert {slot.slot_id: slot.waiting_for for slot in first.held} == {
        alpha_day_1: (DAY_1,),
        f"{BETA}:{METER}:{DAY_1.isoformat()}": (DAY_1,),
        f"{BETA}:{METER}:{DAY_2.isoformat()}": (DAY_1,),
    }
    assert outbox.held_usage_dates(billing.outbox) == {DAY_1, DAY_2}

    second = billing.run(DAY_1)
    assert billing.rated()[alpha_day_1] == 30_000
    assert second.held == []
    assert second.decreases == []
    # Day 1's run also sends the held day-2 slot, which day 1 did not touch.
    assert billing.recorded() == billing.rated()
    assert outbox.held_usage_dates(billing.outbox) == set()

    again = billing.run(DAY_2)
    assert (again.intents, again.held, again.decreases) == ([], [], [])


def test_in_order_nothing_is_held(billing: Billing) -> None:
    assert billing.run(DAY_1).held == []
    assert billing.run(DAY_2).held == []
    assert billing.recorded() == billing.rated()


def test_a_file_delivered_to_a_day_after_it_ran_holds_that_days_slots(
    billing: Billing, tmp_path: Path
) -> None:
    billing.run(DAY_1)
    billing.run(DAY_2)
    late_file = billing.raw_usage_dir / f"date={DAY_1.isoformat()}" / "hour=23"
    late_file.mkdir(parents=True)
    (late_file / "part-0000.ndjson.gz").write_bytes(gzip.compress(b""))
    unsettled = unsettled_customer_days(billing.warehouse, billing.raw_usage_dir, {DAY_1, DAY_2})
    assert unsettled == {
        (ALPHA, DAY_1): (DAY_1,),
        (BETA, DAY_1): (DAY_1,),
        (BETA, DAY_2): (DAY_1,),
    }
    assert billing.run(DAY_1).held == []


DAY_3 = date(2026, 10, 3)


def test_a_late_event_that_changes_a_latest_value_sends_the_later_days_down(
    tmp_path: Path, ledger_url: str
) -> None:
    """A `latest` meter's day adds the change of the period's latest value, so an event that
    arrives late for day 1 (after day 2 ran) changes day 2's addition too, here downwards: the
    Stripe step plans day 2 although only day 1 was touched, and sends the negative difference
    (Stripe sums meter events, negative ones included) instead of reporting a decrease."""
    write_hand_fixture(tmp_path)
    folder = tmp_path / "raw" / "usage" / f"date={DAY_3.isoformat()}" / "hour=09"
    folder.mkdir(parents=True)
    late = {
        "event_id": "evt_b_late_latest",
        "customer_id": BETA,
        "event_type": "model_call",
        "occurred_at": "2026-10-01T23:59:00.000Z",
        "received_at": "2026-10-03T09:00:00.000Z",
        "properties": {
            "model": "nimbus-small",
            "input_tokens": 10,
            "output_tokens": 1_000_000,
            "cache_read_tokens": 0,
            "request_kind": "agent",
        },
    }
    with gzip.open(folder / "part-0000.ndjson.gz", "wt", encoding="utf-8") as handle:
        handle.write(json.dumps(late) + "\n")
    with psycopg.connect(ledger_url, autocommit=True) as conn:
        billing = Billing(tmp_path, conn, rating_sql=LATEST_RATING_SQL, aggregation="latest")
        try:
            billing.run(DAY_1)
            billing.run(DAY_2)
            before = billing.recorded()
            assert before == billing.rated()
            beta_day_2 = f"{BETA}:{LATEST_METER}:{DAY_2.isoformat()}"

            third = billing.run(DAY_3)
            assert touched_usage_dates(billing.warehouse, DAY_3, DAY_3 + timedelta(days=1)) == {
                DAY_1
            }
            assert billing.rated()[beta_day_2] < before[beta_day_2]
            lowered = [i for i in third.intents if i.slot_id == beta_day_2]
            assert [i.quantity_delta for i in lowered] == [
                billing.rated()[beta_day_2] - before[beta_day_2]
            ]
            assert third.decreases == []
            assert billing.recorded() == billing.rated()
            again = billing.run(DAY_3)
            assert (again.intents, again.held, again.decreases) == ([], [], [])
        finally:
            billing.warehouse.close()
