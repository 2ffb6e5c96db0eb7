"""The outbox and sender against the local Stripe, over HTTP with the real client."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date
from pathlib import Path

import psycopg
import pytest
import stripe

from stripe_local.server import LocalStripeServer, free_port
from stripe_sync import outbox
from stripe_sync.meter_events import (
    METER_EVENT_OPERATION,
    MeterSlot,
    ensure_meters,
    plan_meter_events,
    send_pending_meter_events,
)

DAY = date(2026, 10, 1)
NOW = "2026-10-05T00:00:00Z"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[LocalStripeServer]:
    customers = tmp_path / "customers.csv"
    customers.write_text(
        "id,email,name,currency,created,metadata\n"
        + "".join(f"cus_{n},c{n}@example.com,C{n},usd,1786924800,{{}}\n" for n in range(6))
    )
    with LocalStripeServer(now=NOW, seed_customers_csv=customers) as running:
        yield running


def client_for(url: str) -> stripe.StripeClient:
    return stripe.StripeClient(
        "sk_test_local", base_addresses={"api": url, "meter_events": url}, max_network_retries=0
    )


@pytest.fixture
def conn(ledger_url: str) -> Iterator[psycopg.Connection]:
    with psycopg.connect(ledger_url, autocommit=True) as connection:
        outbox.ensure_schema(connection)
        yield connection


def record(conn: psycopg.Connection, slots: list[MeterSlot]) -> int:
    intents, _ = plan_meter_events(
        slots, recorded=outbox.slot_totals(conn, METER_EVENT_OPERATION), usage_dates={DAY}
    )
    return outbox.record_intents(conn, intents)


def test_sends_every_slot_once_in_parallel_lanes(
    server: LocalStripeServer, conn: psycopg.Connection
) -> None:
    client = client_for(server.url)
    ensure_meters(client, [("m1", "Meter 1"), ("m2", "Meter 2")])
    slots = [MeterSlot(f"cus_{n}", m, DAY, 10 + n) for n in range(6) for m in ("m1", "m2")]
    assert record(conn, slots) == 12
    assert record(conn, slots) == 0
    report = send_pending_meter_events(conn, client, concurrency=4)
    assert (report.sent, report.dead, report.still_pending) == (12, 0, 0)
    assert send_pending_meter_events(conn, client).sent == 0
    assert len(server.store.meter_events()) == 12
    # More usage later: only the increase is sent, as a new revision.
    record(conn, [MeterSlot("cus_0", "m1", DAY, 15)])
    send_pending_meter_events(conn, client)
    values = [
        int(e["payload"]["value"])
        for e in server.store.meter_events()
        if e["payload"]["stripe_customer_id"] == "cus_0" and e["event_name"] == "m1"
    ]
    assert sorted(values) == [5, 10]
    assert outbox.state_counts(conn) == {"sent": 13}


def test_a_lost_response_is_safe_to_send_again(
    server: LocalStripeServer, conn: psycopg.Connection
) -> None:
    """Stripe committed the event but the answer was lost: the retry must not count it twice."""
    client = client_for(server.url)
    ensure_meters(client, [("m1", "Meter 1")])
    record(conn, [MeterSlot("cus_1", "m1", DAY, 7)])
    (write,) = outbox.pending_writes(conn, METER_EVENT_OPERATION)
    client.v1.billing.meter_events.create(
        params=write.request_payload,  # type: ignore[arg-type]
        options={"idempotency_key": write.idempotency_key},
    )
    report = send_pending_meter_events(conn, client)
    assert report.sent == 1
    assert len(server.store.meter_events()) == 1


def test_invalid_writes_go_to_dead_letters_and_outages_stay_pending(
    server: LocalStripeServer, conn: psycopg.Connection
) -> None:
    client = client_for(server.url)
    ensure_meters(client, [("m1", "Meter 1")])
    record(conn, [MeterSlot("cus_nobody", "m1", DAY, 3)])
    report = send_pending_meter_events(conn, client)
    assert report.dead == 1
    row = conn.execute("select state, last_error from stripe_sync.outbox").fetchone()
    assert row is not None and row[0] == "dead" and "No such customer" in row[1]

    record(conn, [MeterSlot("cus_2", "m1", DAY, 4)])
    unreachable = client_for(f"http://127.0.0.1:{free_port()}")
    report = send_pending_meter_events(conn, unreachable, max_attempts=2)
    assert (report.sent, report.still_pending, report.attempts) == (0, 1, 2)
    assert send_pending_meter_events(conn, client).sent == 1


def test_same_key_with_other_content_is_refused(conn: psycopg.Connection) -> None:
    intents, _ = plan_meter_events(
        [MeterSlot("cus_1", "m1", DAY, 5)], recorded={}, usage_dates={DAY}
    )
    outbox.record_intents(conn, intents)
    changed, _ = plan_meter_events(
        [MeterSlot("cus_1", "m1", DAY, 6)], recorded={}, usage_dates={DAY}
    )
    with pytest.raises(outbox.OutboxConflictError, match=changed[0].idempotency_key):
        outbox.record_intents(conn, changed)


def test_a_refused_batch_records_nothing_and_a_repeat_records_nothing_new(
    conn: psycopg.Connection,
) -> None:
    """Recording is all or nothing: one key with two payloads in one batch refuses the batch."""
    first, _ = plan_meter_events(
        [MeterSlot(f"cus_{n}", "m1", DAY, n + 1) for n in range(3)], recorded={}, usage_dates={DAY}
    )
    clash, _ = plan_meter_events([MeterSlot("cus_1", "m1", DAY, 7)], recorded={}, usage_dates={DAY})
    with pytest.raises(outbox.OutboxConflictError, match=clash[0].idempotency_key):
        outbox.record_intents(conn, [*first, *clash])
    assert outbox.slot_totals(conn, METER_EVENT_OPERATION) == {}
    assert outbox.record_intents(conn, [*first, *first]) == 3
    assert outbox.record_intents(conn, first) == 0
    pending = outbox.pending_writes(conn, METER_EVENT_OPERATION)
    assert [w.idempotency_key for w in pending] == [i.idempotency_key for i in first]


def test_an_identifier_stripe_already_holds_counts_as_sent(
    server: LocalStripeServer, conn: psycopg.Connection
) -> None:
    """After Stripe forgot the idempotency key (24 h), the identifier still stops a double count."""
    client = client_for(server.url)
    ensure_meters(client, [("m1", "Meter 1")])
    record(conn, [MeterSlot("cus_3", "m1", DAY, 9)])
    (write,) = outbox.pending_writes(conn, METER_EVENT_OPERATION)
    client.v1.billing.meter_events.create(
        params=write.request_payload,  # type: ignore[arg-type]
        options={"idempotency_key": "another-key"},
    )
    report = send_pending_meter_events(conn, client)
    assert (report.sent, report.dead) == (1, 0)
    assert len(server.store.meter_events()) == 1
