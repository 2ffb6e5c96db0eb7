"""Usage sent through the outbox to the local Stripe while it injects faults: a month of days with
late events, then a full re-run. Stripe ends with exactly the expected usage per customer, meter
and day, and the re-run sends nothing."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
import stripe

from stripe_local.faults import FaultPlan
from stripe_local.server import LocalStripeServer
from stripe_sync import outbox
from stripe_sync.meter_event_stream import MeterEventSession, send_pending_meter_events_stream
from stripe_sync.meter_events import (
    METER_EVENT_OPERATION,
    MeterSlot,
    SendReport,
    ensure_meters,
    plan_meter_events,
    send_pending_meter_events,
)

FIRST_DAY = date(2026, 10, 1)
SERVER_NOW = "2026-11-03T00:00:00Z"  # the whole month lies within Stripe's 35-day window
METERS = ("input_tokens", "output_tokens", "requests")
FAULTS = "rate=0.3,kinds=429+500+timeout+lost,seed=11,timeout=0.6"
CLIENT_TIMEOUT = 0.3  # shorter than the injected timeout: the client gives up and retries


def customers_csv(path: Path, count: int) -> Path:
    path.write_text(
        "id,email,name,currency,created,metadata\n"
        + "".join(f"cus_{n:03d},c{n}@example.com,C{n},usd,1786924800,{{}}\n" for n in range(count))
    )
    return path


@pytest.fixture
def conn(ledger_url: str) -> Iterator[psycopg.Connection]:
    with psycopg.connect(ledger_url, autocommit=True) as connection:
        outbox.ensure_schema(connection)
        yield connection


def client_for(url: str, key: str = "sk_test_local") -> stripe.StripeClient:
    return stripe.StripeClient(
        key,
        base_addresses={"api": url, "meter_events": url},
        max_network_retries=0,
        http_client=stripe.new_default_http_client(timeout=CLIENT_TIMEOUT),
    )


Sender = Callable[[psycopg.Connection, str], SendReport]


def send_stream(conn: psycopg.Connection, url: str) -> SendReport:
    return send_pending_meter_events_stream(
        conn, client_for(url), lambda token: client_for(url, token), max_attempts=8
    )


def send_v1(conn: psycopg.Connection, url: str) -> SendReport:
    return send_pending_meter_events(conn, client_for(url), max_attempts=8, concurrency=4)


def run_day(
    conn: psycopg.Connection, url: str, sender: Sender, usage: dict[tuple, int], days: set[date]
) -> tuple[int, int]:
    """What the pipeline's Stripe step does for the usage dates a run touched; sends until
    nothing is pending (a later run would send what one leaves pending)."""
    slots = [MeterSlot(c, m, d, q) for (c, m, d), q in usage.items() if d in days]
    intents, decreases = plan_meter_events(
        slots, recorded=outbox.slot_totals(conn, METER_EVENT_OPERATION), usage_dates=days
    )
    assert decreases == []
    recorded = outbox.record_intents(conn, intents)
    sent = 0
    for _ in range(10):
        report = sender(conn, url)
        sent += report.sent
        assert report.dead == 0
        if report.still_pending == 0:
            break
    assert outbox.state_counts(conn).get("pending", 0) == 0
    return recorded, sent


def usage_at_stripe(server: LocalStripeServer) -> dict[tuple, int]:
    totals: Counter[tuple] = Counter()
    for event in server.store.meter_events():
        day = datetime.fromtimestamp(event["timestamp"], UTC).date()
        totals[(event["payload"]["stripe_customer_id"], event["event_name"], day)] += int(
            event["payload"]["value"]
        )
    return dict(totals)


@pytest.mark.parametrize(
    ("sender", "days", "customers"),
    [(send_stream, 30, 12), (send_v1, 6, 4)],
    ids=["v2-stream-month", "v1-week"],
)
def test_usage_reaches_stripe_exactly_once_despite_faults(
    tmp_path: Path, conn: psycopg.Connection, sender: Sender, days: int, customers: int
) -> None:
    faults = FaultPlan.parse(FAULTS)
    with LocalStripeServer(
        now=SERVER_NOW,
        seed_customers_csv=customers_csv(tmp_path / "customers.csv", customers),
        faults=faults,
    ) as server:
        for _ in range(20):  # set-up under the same faults, retried as the pipeline would be
            try:
                ensure_meters(client_for(server.url), [(m, m) for m in METERS])
                break
            except stripe.StripeError:
                continue
        rng = random.Random(5)
        usage: dict[tuple, int] = {}
        for offset in range(days):
            day = FIRST_DAY + timedelta(days=offset)
            for n in range(customers):
                for meter in METERS:
                    usage[(f"cus_{n:03d}", meter, day)] = rng.randint(1, 10**6)
            touched = {day}
            if offset:  # late events raise some of yesterday's slots
                yesterday = day - timedelta(days=1)
                for n in rng.sample(range(customers), k=max(1, customers // 3)):
                    usage[(f"cus_{n:03d}", METERS[0], yesterday)] += rng.randint(1, 1000)
                touched.add(yesterday)
            run_day(conn, server.url, sender, usage, touched)

        assert usage_at_stripe(server) == usage  # no slot missing, none counted twice
        injected = faults.describe()["injected"]
        # Lost responses reached the handlers (and were counted there); the others did not.
        attempted = server.store.counter("requests") + sum(
            count for kind, count in injected.items() if kind != "lost"
        )
        assert sum(injected.values()) >= 0.1 * attempted, (injected, attempted)
        assert set(injected) == {"429", "500", "timeout", "lost"}

        events_before = server.store.meter_event_count()
        recorded, sent = run_day(conn, server.url, sender, usage, set(d for _, _, d in usage))
        assert (recorded, sent) == (0, 0)  # a full re-run sends nothing
        assert server.store.meter_event_count() == events_before


def test_an_expired_session_is_renewed_and_the_batch_sent(
    tmp_path: Path, conn: psycopg.Connection
) -> None:
    """Stripe's clock says the session expired before ours does: the sender renews it once."""
    clock = [int(datetime(2026, 10, 5, tzinfo=UTC).timestamp())]
    with LocalStripeServer(
        clock=lambda: clock[0], seed_customers_csv=customers_csv(tmp_path / "c.csv", 3)
    ) as server:
        ensure_meters(client_for(server.url), [(m, m) for m in METERS])
        client = client_for(server.url)
        usage = {(f"cus_{n:03d}", "requests", FIRST_DAY): n + 1 for n in range(3)}
        sessions: list[str] = []

        def stream_client(token: str) -> stripe.StripeClient:
            sessions.append(token)
            return client_for(server.url, token)

        session = MeterEventSession(client, stream_client)

        def send_now(conn: psycopg.Connection, url: str) -> SendReport:
            return send_pending_meter_events_stream(conn, client, stream_client, session=session)

        run_day(conn, server.url, send_now, usage, {FIRST_DAY})
        clock[0] += 16 * 60  # past the 15-minute session on Stripe's clock, not on ours
        later = {**usage, ("cus_000", "requests", FIRST_DAY): 50}
        run_day(conn, server.url, send_now, later, {FIRST_DAY})
        assert usage_at_stripe(server) == later
        assert len(sessions) == 2  # renewed once, when Stripe said it had expired


def test_a_batch_the_stream_refuses_is_sent_event_by_event(
    tmp_path: Path, conn: psycopg.Connection
) -> None:
    """One malformed event must not hold back the good ones beside it: they go through v1, and
    the bad one alone goes to the dead letters with Stripe's message."""
    with LocalStripeServer(
        now=SERVER_NOW, seed_customers_csv=customers_csv(tmp_path / "c.csv", 2)
    ) as server:
        ensure_meters(client_for(server.url), [("requests", "Requests")])
        usage = {
            ("cus_000", "requests", FIRST_DAY): 3,
            ("cus_001", "requests", FIRST_DAY): 4,
            ("cus_000", "m" * 101, FIRST_DAY): 5,  # an event name Stripe refuses outright
        }
        slots = [MeterSlot(c, m, d, q) for (c, m, d), q in usage.items()]
        intents, _ = plan_meter_events(slots, recorded={}, usage_dates={FIRST_DAY})
        outbox.record_intents(conn, intents)
        report = send_stream(conn, server.url)
        assert (report.sent, report.dead, report.still_pending) == (2, 1, 0)
        assert outbox.state_counts(conn) == {"sent": 2, "dead": 1}
        assert usage_at_stripe(server) == {
            ("cus_000", "requests", FIRST_DAY): 3,
            ("cus_001", "requests", FIRST_DAY): 4,
        }


def test_meters_are_created_once_through_faults(tmp_path: Path) -> None:
    """Regression: creating meters had no retry, so one injected fault failed the whole run."""
    names = [(f"meter_{n}", f"Meter {n}") for n in range(12)]
    with LocalStripeServer(now=SERVER_NOW, faults=FaultPlan.parse(FAULTS)) as server:
        created = ensure_meters(client_for(server.url), names)
        again = ensure_meters(client_for(server.url), names)
        assert created == again and len(created) == 12
        assert server.store.count("billing.meter") == 12  # lost responses replayed, not redone
