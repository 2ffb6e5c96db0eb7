"""Reliability: a storm of Stripe webhooks against the real receiver and a real PostgreSQL.

The same storm (``webhook_storm.generate_storm``: the local Stripe's billing of many customers
over several periods, plus subscription changes, late payments, refunds, disputes and meter error
reports) is delivered three times, each into a fresh database: in order; in random order with
each event 1-3 times; and in random order interleaved with bad signatures, stale timestamps,
altered bodies and forged events. The final state must not depend on how it arrived.

CI runs the reduced form (500 events); ``METERBOOK_RELIABILITY_SCALE=full`` runs 10,000
(``bench/reliability_webhooks.py`` runs that and writes the figures to ``docs/reliability.md``).
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest

from ledger import Ledger
from tests.reliability import webhook_storm as storm_kit
from tests.reliability.webhook_storm import Delivery, RunResult, Storm

pytestmark = pytest.mark.reliability

SHUFFLE_SEED = 11
BAD_DELIVERY_SEED = 12
SIGNING_SEED = 13


@dataclass(frozen=True)
class InOrderRun:
    storm: Storm
    plan: list[Delivery]
    result: RunResult
    state: dict[str, Any]
    deliveries: dict[str, int]


@pytest.fixture(scope="module")
def storm() -> Storm:
    return storm_kit.generate_storm(
        events=storm_kit.EVENTS_BY_SCALE[storm_kit.storm_scale()], seed=storm_kit.SEED
    )


@pytest.fixture(scope="module")
def in_order_run(storm: Storm, postgres_url: str) -> Iterator[InOrderRun]:
    """The storm delivered once, in order: what every other delivery must end in."""
    name = f"storm_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(f'create database "{name}"')
    url = storm_kit.without_waiting_for_the_disk(postgres_url.replace("/postgres?", f"/{name}?", 1))
    try:
        plan = storm_kit.in_order(storm)
        result = storm_kit.run_plan(url, plan, seed=SIGNING_SEED)
        yield InOrderRun(
            storm=storm,
            plan=plan,
            result=result,
            state=storm_kit.final_state(url, storm.invoice_ids()),
            deliveries=storm_kit.stored_deliveries(url),
        )
    finally:
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            conn.execute(f'drop database if exists "{name}" with (force)')


def test_the_storm_has_every_kind_of_event_the_receiver_handles(storm: Storm) -> None:
    """A storm that lost a kind of event would prove nothing about it."""
    expected = storm_kit.EVENTS_BY_SCALE[storm_kit.storm_scale()]
    assert len(storm.events) == len(storm.event_ids) == expected
    types = storm.types()
    for event_type in (
        "invoice.created",
        "invoice.finalized",
        "invoice.payment_failed",
        "invoice.paid",
        "invoice.marked_uncollectible",
        "invoice.payment_action_required",
        "invoice.voided",
        "invoice.payment_succeeded",
        "customer.subscription.created",
        "customer.subscription.updated",
        "customer.subscription.deleted",
        "charge.refunded",
        "refund.created",
        "refund.failed",
        "charge.dispute.created",
        "billing.meter.error_report_triggered",
    ):
        assert types[event_type] > 0, event_type
    counts = storm.expected_transactions()
    assert min(counts.values()) > 0, counts  # every posting rule is exercised


def test_in_order_delivery_posts_exactly_what_the_events_call_for(
    in_order_run: InOrderRun,
) -> None:
    run = in_order_run
    assert storm_kit.in_order_problems(run.storm, run.result, run.state, run.deliveries) == []
    balances = {account: amount for (account, _), amount in run.state["balances"].items()}
    assert sum(balances.values()) == 0
    assert balances["platform:bad_debt"] > 0 and balances["platform:refunds"] > 0


def test_random_order_with_replays_ends_in_the_in_order_state(
    in_order_run: InOrderRun, new_database: Callable[[], str]
) -> None:
    storm = in_order_run.storm
    plan = storm_kit.shuffled_with_replays(storm, seed=SHUFFLE_SEED)
    copies = Counter(storm_kit.genuine_copies(plan).values())
    assert set(copies) == {1, 2, 3} and copies.total() == len(storm.events)
    assert [d.event["id"] for d in plan] != [d.event["id"] for d in in_order_run.plan]
    url = storm_kit.without_waiting_for_the_disk(new_database())
    result = storm_kit.run_plan(url, plan, seed=SIGNING_SEED)
    state = storm_kit.final_state(url, storm.invoice_ids())
    deliveries = storm_kit.stored_deliveries(url)

    assert storm_kit.replay_problems(in_order_run.state, plan, result, state, deliveries) == []
    # Spelled out: as many ledger transactions as in order, each event stored once.
    assert state["transactions"] == in_order_run.state["transactions"]
    assert sorted(deliveries) == sorted(storm.event_ids)


def test_bad_signatures_stale_timestamps_and_forgeries_are_refused_and_change_nothing(
    in_order_run: InOrderRun, new_database: Callable[[], str]
) -> None:
    storm = in_order_run.storm
    plan = storm_kit.with_bad_deliveries(storm, seed=BAD_DELIVERY_SEED)
    bad = Counter(d.kind for d in plan if d.bad)
    assert set(bad) == set(storm_kit.BAD_KINDS)
    assert bad.total() >= 0.4 * len(storm.events)
    url = storm_kit.without_waiting_for_the_disk(new_database())
    result = storm_kit.run_plan(url, plan, seed=SIGNING_SEED)
    state = storm_kit.final_state(url, storm.invoice_ids())
    deliveries = storm_kit.stored_deliveries(url)

    assert storm_kit.replay_problems(in_order_run.state, plan, result, state, deliveries) == []
    for kind, count in bad.items():
        assert result.statuses[kind] == Counter({400: count}), kind
    assert state["transactions"] == in_order_run.state["transactions"]
    assert sorted(deliveries) == sorted(storm.event_ids)  # no forged id stored


def test_a_final_failure_and_its_write_off_in_one_second_end_uncollectible_in_any_order(
    new_database: Callable[[], str],
) -> None:
    """Stripe marks an invoice uncollectible in the same run as its last failed retry: both
    events can carry the same ``created`` second."""
    invoice = {
        "id": "in_same_second",
        "object": "invoice",
        "customer": "cus_same_second",
        "currency": "usd",
        "total": 500,
        "amount_due": 500,
        "amount_paid": 0,
        "amount_remaining": 500,
        "attempt_count": 3,
        "next_payment_attempt": None,
        "status": "open",
        "status_transitions": {"finalized_at": 1_790_000_000},
        "metadata": {"meterbook_customer_id": "same_second"},
    }
    second = 1_790_900_000
    written_off = invoice | {
        "status": "uncollectible",
        "status_transitions": {"finalized_at": 1_790_000_000, "marked_uncollectible_at": second},
    }
    finalised, failed, uncollectible = (
        {"id": event_id, "object": "event", "type": kind, "created": at, "data": {"object": obj}}
        for event_id, kind, at, obj in (
            ("evt_same_second_1", "invoice.finalized", 1_790_000_000, invoice),
            ("evt_same_second_2", "invoice.payment_failed", second, invoice),
            ("evt_same_second_3", "invoice.marked_uncollectible", second, written_off),
        )
    )
    states = []
    for order in ([finalised, failed, uncollectible], [finalised, uncollectible, failed]):
        url = storm_kit.without_waiting_for_the_disk(new_database())
        result = storm_kit.run_plan(url, [Delivery("genuine", e) for e in order], seed=1)
        assert result.statuses == {"genuine": Counter({200: 3})}
        with Ledger.connect(url) as book:
            step = book.dunning_state("in_same_second")
            states.append(step.state if step else None)
    assert states == ["uncollectible", "uncollectible"]
