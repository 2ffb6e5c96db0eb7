"""The webhook receiver over real HTTP (uvicorn on 127.0.0.1): signatures, exactly-once storage,
order-independent processing, and the dunning scenarios it drives in the ledger."""

from __future__ import annotations

import json
import random
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from decimal import Decimal
from typing import Any

import psycopg
import pytest
import uvicorn

from ledger import Ledger
from stripe_local.server import free_port
from stripe_sync.webhooks import create_webhook_app, sign

SECRET = "whsec_test_meterbook"
T0 = 1_790_000_000  # 2026-09-21
DAY = 86_400


@contextmanager
def serving(ledger_url: str) -> Iterator[str]:
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(
            create_webhook_app(ledger_url, SECRET),
            host="127.0.0.1",
            port=port,
            log_level="warning",
            lifespan="off",
        )
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "the webhook receiver did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}/stripe/webhooks"
    finally:
        server.should_exit = True
        thread.join(10)


def deliver(url: str, event: dict[str, Any], *, secret: str = SECRET, age: int = 0) -> int:
    body = json.dumps(event).encode()
    request = urllib.request.Request(
        url,
        data=body,
        headers={
            "Stripe-Signature": sign(body, secret, int(time.time()) - age),
            "Content-Type": "application/json",
        },
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


class InvoiceStory:
    """Events of one invoice as Stripe would send them, with consistent snapshots."""

    def __init__(self, invoice_id: str, customer: str, total: int, start: int) -> None:
        self.invoice: dict[str, Any] = {
            "id": invoice_id,
            "object": "invoice",
            "customer": customer,
            "currency": "usd",
            "total": total,
            "amount_due": total,
            "amount_paid": 0,
            "amount_remaining": total,
            "attempt_count": 0,
            "next_payment_attempt": None,
            "status": "draft",
            "status_transitions": {},
            "metadata": {"meterbook_customer_id": customer},
        }
        self.clock = start
        self.events: list[dict[str, Any]] = []
        self.emit("invoice.created")

    def emit(self, event_type: str, **changes: Any) -> None:
        self.clock += 3600
        self.invoice |= changes
        self.events.append(
            {
                "id": f"evt_{self.invoice['id']}_{len(self.events)}",
                "object": "event",
                "type": event_type,
                "created": self.clock,
                "api_version": "2025-09-30.clover",
                "data": {"object": json.loads(json.dumps(self.invoice))},
            }
        )

    def finalise(self) -> InvoiceStory:
        transitions = {**self.invoice["status_transitions"], "finalized_at": self.clock + 3600}
        self.emit("invoice.finalized", status="open", status_transitions=transitions)
        return self

    def decline(self, retry: bool = True) -> InvoiceStory:
        attempt = self.invoice["attempt_count"] + 1
        self.emit(
            "invoice.payment_failed",
            attempt_count=attempt,
            next_payment_attempt=self.clock + 3 * DAY if retry else None,
        )
        return self

    def pay(self) -> InvoiceStory:
        transitions = {**self.invoice["status_transitions"], "paid_at": self.clock + 3600}
        self.emit(
            "invoice.paid",
            status="paid",
            amount_paid=self.invoice["total"],
            amount_remaining=0,
            attempt_count=self.invoice["attempt_count"] + 1,
            next_payment_attempt=None,
            status_transitions=transitions,
        )
        return self

    def give_up(self) -> InvoiceStory:
        transitions = {
            **self.invoice["status_transitions"],
            "marked_uncollectible_at": self.clock + 3600,
        }
        self.emit(
            "invoice.marked_uncollectible",
            status="uncollectible",
            next_payment_attempt=None,
            status_transitions=transitions,
        )
        return self

    def void(self) -> InvoiceStory:
        transitions = {**self.invoice["status_transitions"], "voided_at": self.clock + 3600}
        self.emit(
            "invoice.voided",
            status="void",
            amount_remaining=0,
            next_payment_attempt=None,
            status_transitions=transitions,
        )
        return self


def subscription_events(
    sub_id: str, customer: str, start: int, *, periods_on_items: bool = True
) -> list[dict[str, Any]]:
    """A subscription's life. Current API versions keep the period on each item; versions
    before 2025-03-31 kept it on the subscription."""
    period = {"current_period_start": start, "current_period_end": start + 30 * DAY}

    def event(n: int, event_type: str, status: str, plan: str) -> dict[str, Any]:
        subscription: dict[str, Any] = {
            "id": sub_id,
            "object": "subscription",
            "customer": customer,
            "status": status,
            "metadata": {"plan_id": plan},
        }
        if periods_on_items:
            subscription["items"] = {
                "object": "list",
                "data": [{"id": f"si_{sub_id}", "object": "subscription_item", **period}],
            }
        else:
            subscription |= period
        return {
            "id": f"evt_{sub_id}_{n}",
            "object": "event",
            "type": event_type,
            "created": start + n * DAY,
            "data": {"object": subscription},
        }

    return [
        event(0, "customer.subscription.created", "active", "starter"),
        event(5, "customer.subscription.updated", "active", "pro"),
        event(9, "customer.subscription.updated", "past_due", "pro"),
        event(12, "customer.subscription.deleted", "canceled", "pro"),
    ]


def refund_event(
    n: int, event_type: str, refund_id: str, charge_id: str, amount: int, start: int, **changes: Any
) -> dict[str, Any]:
    return {
        "id": f"evt_{refund_id}_{n}",
        "object": "event",
        "type": event_type,
        "created": start + n * DAY,
        "data": {
            "object": {
                "id": refund_id,
                "object": "refund",
                "amount": amount,
                "charge": charge_id,
                "currency": "usd",
                "created": start + DAY,
                "status": "succeeded",
                **changes,
            }
        },
    }


def charge_events(start: int) -> list[dict[str, Any]]:
    """Refunds as current API versions send them (``charge.refunded`` without the refunds, each
    refund in its own ``refund.*`` events; one of them fails), a refund of an older-style charge
    that lists it and also has its own event, a dispute on another charge, and a meter error
    report."""

    def charge(n: int, charge_id: str, refunds: list[tuple[str, int]] | None) -> dict[str, Any]:
        obj: dict[str, Any] = {
            "id": charge_id,
            "object": "charge",
            "customer": "acme",
            "currency": "usd",
            "amount": 4_500,
            "amount_refunded": sum(a for _, a in refunds or []),
            "metadata": {"meterbook_customer_id": "acme"},
        }
        if refunds is not None:  # API versions before 2022-11-15 listed them
            obj["refunds"] = {
                "object": "list",
                "data": [
                    {"id": rid, "object": "refund", "amount": amount, "created": start + DAY}
                    for rid, amount in refunds
                ],
            }
        return {
            "id": f"evt_{charge_id}_{n}",
            "object": "event",
            "type": "charge.refunded",
            "created": start + n * DAY,
            "data": {"object": obj},
        }

    return [
        charge(1, "ch_1", None),
        refund_event(1, "refund.created", "re_1", "ch_1", 500, start),
        charge(2, "ch_1", None),
        refund_event(2, "refund.created", "re_2", "ch_1", 250, start),
        refund_event(3, "refund.updated", "re_2", "ch_1", 250, start),  # a redundant update
        refund_event(2, "refund.created", "re_4", "ch_1", 100, start, status="pending"),
        refund_event(4, "refund.failed", "re_4", "ch_1", 100, start, status="failed"),
        charge(1, "ch_legacy", [("re_3", 300)]),
        refund_event(1, "refund.created", "re_3", "ch_legacy", 300, start),
        {
            "id": "evt_dp_1",
            "object": "event",
            "type": "charge.dispute.created",
            "created": start + 3 * DAY,
            "data": {
                "object": {
                    "id": "dp_1",
                    "object": "dispute",
                    "charge": "ch_2",
                    "amount": 999,
                    "currency": "usd",
                    "reason": "fraudulent",
                    "status": "needs_response",
                    "created": start + 3 * DAY,
                }
            },
        },
        {
            "id": "evt_mer_1",
            "object": "event",
            "type": "billing.meter.error_report_triggered",
            "created": start + 4 * DAY,
            "data": {"object": {"id": "mer_1", "object": "billing.meter_error_report"}},
        },
    ]


def month_of_events() -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    stories = [
        InvoiceStory("in_paid", "acme", 4_500, T0).finalise().pay(),
        InvoiceStory("in_recovered", "beta", 12_345, T0).finalise().decline().decline().pay(),
        InvoiceStory("in_lost", "gamma", 999, T0)
        .finalise()
        .decline()
        .decline()
        .decline(retry=False)
        .give_up(),
        InvoiceStory("in_late_pay", "delta", 700, T0)
        .finalise()
        .decline(retry=False)
        .give_up()
        .pay(),
        InvoiceStory("in_draft", "acme", 100, T0),
        InvoiceStory("in_voided", "epsilon", 300, T0).finalise().void(),
        InvoiceStory("in_lost_voided", "zeta", 200, T0)
        .finalise()
        .decline(retry=False)
        .give_up()
        .void(),
    ]
    for story in stories:
        events.extend(story.events)
    events.extend(subscription_events("sub_1", "acme", T0))
    events.extend(subscription_events("sub_old", "beta", T0, periods_on_items=False))
    events.extend(charge_events(T0))
    return events


def final_state(ledger_url: str) -> dict[str, Any]:
    with Ledger.connect(ledger_url) as book:
        report = book.verify(recompute_hashes=True)
        assert report.ok, report.problems()
        dunning = {
            invoice: (state.state if (state := book.dunning_state(invoice)) else None)
            for invoice in (
                "in_paid",
                "in_recovered",
                "in_lost",
                "in_late_pay",
                "in_draft",
                "in_voided",
                "in_lost_voided",
            )
        }
        balances = book.balances()
    with psycopg.connect(ledger_url) as conn:
        subscriptions = conn.execute(
            "select subscription_id, status, plan_id, as_of_event, current_period_start, "
            "current_period_end from stripe_sync.subscriptions order by subscription_id"
        ).fetchall()
        disputes = conn.execute(
            "select dispute_id, charge_id, amount from stripe_sync.disputes"
        ).fetchall()
    return {
        "disputes": disputes,
        "ledger_hash": report.content_hash,
        "dunning": dunning,
        "balances": balances,
        "subscriptions": subscriptions,
    }


@pytest.fixture
def receiver(ledger_url: str) -> Iterator[str]:
    Ledger.connect(ledger_url).close()
    with serving(ledger_url) as url:
        yield url


def stored(ledger_url: str) -> list[tuple[str, int]]:
    with psycopg.connect(ledger_url) as conn:
        return conn.execute(
            "select event_id, deliveries from stripe_sync.webhook_events order by event_id"
        ).fetchall()


@pytest.mark.parametrize(
    "tamper",
    [
        pytest.param(lambda url, e: deliver(url, e, secret="whsec_wrong"), id="wrong secret"),
        pytest.param(lambda url, e: deliver(url, e, age=600), id="stale timestamp"),
    ],
)
def test_a_bad_signature_is_refused_and_nothing_is_stored(
    receiver: str, ledger_url: str, tamper: Callable[[str, dict[str, Any]], int]
) -> None:
    event = InvoiceStory("in_1", "acme", 100, T0).finalise().events[-1]
    assert tamper(receiver, event) == 400
    with psycopg.connect(ledger_url) as conn:
        exists = conn.execute("select to_regclass('stripe_sync.webhook_events')").fetchone()
        count = (
            conn.execute("select count(*) from stripe_sync.webhook_events").fetchone()
            if exists and exists[0]
            else (0,)
        )
    assert count == (0,)


def test_an_event_delivered_three_times_is_processed_once(receiver: str, ledger_url: str) -> None:
    story = InvoiceStory("in_1", "acme", 4_500, T0).finalise()
    for _ in range(3):
        assert deliver(receiver, story.events[-1]) == 200
    assert stored(ledger_url) == [(story.events[-1]["id"], 3)]
    with Ledger.connect(ledger_url) as book:
        assert book.verify().transactions == 1
        assert book.balance("customer:acme:receivable", "usd") == Decimal(4500)


def test_any_order_and_redeliveries_end_in_the_in_order_state(
    new_database: Callable[[], str],
) -> None:
    events = month_of_events()
    in_order_url, shuffled_url = new_database(), new_database()
    for url in (in_order_url, shuffled_url):
        Ledger.connect(url).close()
    with serving(in_order_url) as receiver:
        for event in sorted(events, key=lambda e: e["created"]):
            assert deliver(receiver, event) == 200
    shuffled = events + random.Random(3).sample(events, k=len(events) // 2)  # redeliveries
    random.Random(7).shuffle(shuffled)
    with serving(shuffled_url) as receiver:
        for event in shuffled:
            assert deliver(receiver, event) == 200
    assert final_state(shuffled_url) == final_state(in_order_url)


def test_failed_payments_end_recovered_or_uncollectible_with_the_right_balances(
    receiver: str, ledger_url: str
) -> None:
    for event in month_of_events():
        assert deliver(receiver, event) == 200
    state = final_state(ledger_url)
    assert state["dunning"] == {
        "in_paid": None,
        "in_recovered": "recovered",
        "in_lost": "uncollectible",
        "in_late_pay": "recovered",  # written off, then paid after all
        "in_draft": None,
        "in_voided": None,
        "in_lost_voided": "uncollectible",
    }
    balances = {account: amount for (account, _), amount in state["balances"].items()}
    for customer in ("acme", "beta", "gamma", "delta", "epsilon", "zeta"):
        assert balances[f"customer:{customer}:receivable"] == 0
    # A voided invoice's amount is back where it was before it was invoiced: unbilled (these
    # customers accrued nothing here, so exactly zero); zeta's write-off was undone by the void.
    assert balances["customer:epsilon:unbilled_receivable"] == 0
    assert balances["customer:zeta:unbilled_receivable"] == 0
    # Three refunds, each posted once (re_3 seen twice, from its charge's list and its own
    # event); the failed re_4 posted and reversed.
    assert balances["platform:refunds"] == 500 + 250 + 300
    assert balances["platform:stripe_clearing"] == 4_500 + 12_345 + 700 - 1_050
    assert balances["platform:bad_debt"] == 999  # delta's write-off was reversed when it paid
    period = (T0, T0 + 30 * DAY)
    assert state["subscriptions"] == [
        ("sub_1", "canceled", "pro", "evt_sub_1_12", *period),  # the period from its items
        ("sub_old", "canceled", "pro", "evt_sub_old_12", *period),
    ]
    assert state["disputes"] == [("dp_1", "ch_2", 999)]
