"""Injected faults look to stripe-python exactly like Stripe's and the network's."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import stripe

from stripe_local.faults import FaultPlan, MeterCorruption
from stripe_local.server import LocalStripeServer
from tests.stripe_local.helpers import NOW, NOW_ISO, client_for, make_meter, send


def only(kind: str, timeout: float = 1.0) -> FaultPlan:
    return FaultPlan(rate=1.0, kinds=(kind,), seed=1, timeout_seconds=timeout)


@pytest.fixture
def quiet(tmp_path: Path) -> Iterator[LocalStripeServer]:
    """A server whose faults a test switches on through ``/_local/faults``."""
    with LocalStripeServer(db_path=tmp_path / "s.sqlite3", now=NOW_ISO) as server:
        yield server


def set_faults(server: LocalStripeServer, text: str) -> dict[str, object]:
    request = urllib.request.Request(f"{server.url}/_local/faults", data=text.encode())
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.loads(response.read())


def test_fault_plans_are_parsed_checked_and_repeatable() -> None:
    plan = FaultPlan.parse("rate=0.5,kinds=429+lost,seed=3,timeout=0.5")
    assert (plan.rate, plan.kinds, plan.seed, plan.timeout_seconds) == (
        0.5,
        ("429", "lost"),
        3,
        0.5,
    )
    draws = [plan.draw() for _ in range(200)]
    again = FaultPlan.parse("rate=0.5,kinds=429+lost,seed=3")
    assert draws == [again.draw() for _ in range(200)]
    assert 60 < sum(d is not None for d in draws) < 140
    for bad in ("rate=2", "kinds=418", "colour=red"):
        with pytest.raises(ValueError):
            FaultPlan.parse(bad)


@pytest.mark.parametrize(
    ("kind", "error"),
    [
        ("429", stripe.RateLimitError),
        ("500", stripe.APIError),
        ("timeout", stripe.APIConnectionError),
        ("lost", stripe.APIError),
    ],
)
def test_each_fault_reaches_the_client_as_stripe_would(
    quiet: LocalStripeServer, kind: str, error: type[Exception]
) -> None:
    client = client_for(quiet)
    make_meter(client)
    who = client.v1.customers.create(params={"email": "a@example.com"}).id
    set_faults(quiet, f"rate=1,kinds={kind},timeout=1")
    impatient = stripe.StripeClient(
        "sk_test_123",
        base_addresses={"api": quiet.url, "meter_events": quiet.url},
        max_network_retries=0,
        http_client=stripe.new_default_http_client(timeout=0.3),
    )
    with pytest.raises(error):
        send(impatient, who, 5, key="k1")
    # Only a lost response did the work; the others did nothing.
    assert quiet.store.meter_event_count() == (1 if kind == "lost" else 0)
    set_faults(quiet, "rate=0")
    replay = send(client, who, 5, key="k1")  # the retry, with the same Idempotency-Key
    assert replay.payload["value"] == "5"
    assert quiet.store.meter_event_count() == 1
    assert set_faults(quiet, "rate=0")["injected"] == {}  # a new plan starts its own count


def test_faults_never_touch_the_local_endpoints(tmp_path: Path) -> None:
    with LocalStripeServer(db_path=tmp_path / "s.sqlite3", now=NOW_ISO, faults=only("500")) as s:
        client = client_for(s)
        with pytest.raises(stripe.APIError):
            client.v1.customers.list()
        with urllib.request.urlopen(f"{s.url}/_local/stats", timeout=5) as response:
            assert response.status == 200


def test_corruption_is_parsed_checked_and_decided_by_identifier() -> None:
    corruption = MeterCorruption.parse("drop=0.25,double=0.25,seed=3")
    assert corruption.describe() == {"drop_rate": 0.25, "double_rate": 0.25, "seed": 3}
    decided = [corruption.applied_value(f"mev_{n}", 10) for n in range(400)]
    assert decided == [corruption.applied_value(f"mev_{n}", 10) for n in range(400)]
    kinds = {kind: sum(1 for _, k in decided if k == kind) for kind in (None, "dropped", "doubled")}
    assert 60 < kinds["dropped"] < 140 and 60 < kinds["doubled"] < 140
    assert {value for value, kind in decided if kind == "dropped"} == {0}
    assert {value for value, kind in decided if kind == "doubled"} == {20}
    assert MeterCorruption().applied_value("mev_1", 7) == (7, None)
    for text in ("drop=1.5", "drop=0.6,double=0.6", "lose=0.1"):
        with pytest.raises(ValueError):
            MeterCorruption.parse(text)


def test_a_corrupted_meter_counts_wrong_while_the_caller_sees_success(
    server: LocalStripeServer,
) -> None:
    client = client_for(server)
    meter = make_meter(client)
    customer = client.v1.customers.create(params={"name": "Corrupted"}).id
    request = urllib.request.Request(
        f"{server.url}/_local/corruption", data=b"drop=0.5,double=0.5,seed=1", method="POST"
    )
    urllib.request.urlopen(request).close()
    for n in range(20):
        assert send(client, customer, 10, identifier=f"evt_{n}").identifier == f"evt_{n}"
    with urllib.request.urlopen(f"{server.url}/_local/corruption") as response:
        corrupted = json.loads(response.read())["corrupted_events"]
    assert len(corrupted) == 20  # every event was dropped or doubled
    counted = sum(event["applied"] for event in corrupted)
    summaries = client.v1.billing.meters.event_summaries.list(
        meter.id,
        params={"customer": customer, "start_time": NOW - 2 * 86_400, "end_time": NOW},
    )
    assert [s.aggregated_value for s in summaries.data] == [counted]
    assert counted != 200
