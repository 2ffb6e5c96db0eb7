"""The reads that need the warehouse, on the hand fixture billed by the real pipeline (Dagster,
DuckDB, dbt, the ledger, the local Stripe): explain back and forward, the customer's state and
the anomalies, answered from the published snapshot while the pipeline writes."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import datetime
from decimal import Decimal
from typing import Any

import psycopg

from api.snapshot import open_snapshot
from ledger import Ledger
from orchestration.runner import run_days
from orchestration.settings import get_settings
from tests.api.conftest import ApiServer
from tests.conftest import PipelineEnvironment
from tests.hand_fixture import ALPHA, BETA, GHOST
from tests.pipeline.conftest import stripe_server  # noqa: F401  (the fixture)
from tests.pipeline.test_end_to_end import DAY_1, DAY_2

GRANT_KEYS = 10
GRANT_THREADS = 5


def _bill(first: Any, last: Any) -> None:
    outcomes = run_days(get_settings(), first, last, chunk_days=1)
    assert outcomes and all(outcome.success for outcome in outcomes), outcomes


def _published_at(env: PipelineEnvironment) -> datetime:
    """When the pipeline's run last published the API's snapshot (its last asset)."""
    with open_snapshot(env.data_dir / "api_snapshot") as snapshot:
        return snapshot.published_at


def test_explain_customers_and_anomalies_while_the_pipeline_writes(
    pipeline_env: PipelineEnvironment,
    stripe_server: str,  # noqa: F811
    start_api: Callable[..., ApiServer],
) -> None:
    """One pipeline (it takes minutes here): day 1 billed and published; the API then answers
    continuously while day 2 is billed (the run holds DuckDB's write lock; the API never opens
    the warehouse file, so neither fails the other); then everything is explained."""
    _bill(DAY_1, DAY_1)
    first_publication = _published_at(pipeline_env)
    api = start_api(
        customers_csv=pipeline_env.data_dir / "raw" / "stripe" / "customers.csv",
        snapshot_dir=pipeline_env.data_dir / "api_snapshot",
    )
    statuses: list[int] = []
    stop = threading.Event()

    def read_continuously() -> None:
        params = {"customer": ALPHA, "metric": "nimbus_large__input_tokens", "day": "2026-10-01"}
        with api.client("viewer") as client:
            while not stop.is_set():
                statuses.append(client.get("/explain", params=params).status_code)
                statuses.append(client.get(f"/customers/{ALPHA}").status_code)
                time.sleep(0.05)

    grants: list[tuple[int, bool]] = []

    def grant_continuously(worker: int) -> None:
        """Grants under 10 Idempotency-Keys, each sent again and again from several threads,
        for as long as the partition runs (its ledger posting included)."""
        number = worker
        with api.client("support") as client:
            while not stop.is_set():
                key = number % GRANT_KEYS
                response = client.post(
                    f"/customers/{ALPHA}/credits",
                    json={"amount_minor": str(100 + key), "currency": "usd", "reason": "outage"},
                    headers={"Idempotency-Key": f"during-run-{key}"},
                )
                replayed = response.headers.get("idempotent-replayed") == "true"
                grants.append((response.status_code, replayed))
                number += GRANT_THREADS
                time.sleep(0.05)

    threads = [threading.Thread(target=read_continuously)] + [
        threading.Thread(target=grant_continuously, args=(worker,))
        for worker in range(GRANT_THREADS)
    ]
    for thread in threads:
        thread.start()
    try:
        _bill(DAY_2, DAY_2)  # writes the warehouse and the ledger while the API reads and grants
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=60)
    assert len(statuses) > 10 and set(statuses) == {200}, statuses[:20]
    assert _published_at(pipeline_env) > first_publication
    # Exactly one grant per key however often it was sent; the ledger balanced and intact.
    assert len(grants) >= 50 and {status for status, _ in grants} == {201}, grants[:20]
    assert sum(not replayed for _, replayed in grants) == GRANT_KEYS
    with Ledger.connect(pipeline_env.ledger_url) as book:
        report = book.verify(recompute_hashes=True)
    with psycopg.connect(pipeline_env.ledger_url) as conn:
        credit_grants = conn.execute(
            "select count(*) from ledger.transactions where kind = 'credit_grant'"
        ).fetchone()
    assert report.ok, report.problems()
    assert credit_grants == (GRANT_KEYS,)

    with api.client("viewer") as client:
        # Back: alpha's input tokens on 1 October, one event on time and one late.
        params = {"customer": ALPHA, "metric": "nimbus_large__input_tokens", "day": "2026-10-01"}
        explained = client.get("/explain", params=params)
        assert explained.status_code == 200, explained.text
        body = explained.json()
        events = body["events"]["items"]
        assert sorted(event["event_id"] for event in events) == ["evt_a1", "evt_a2"]
        billed_quantity = int(body["rating"]["quantity_units"])
        assert sum(int(event["quantity_units"]) for event in events) == billed_quantity == 370_000
        assert body["events"]["matches_billed_quantity"] is True
        assert body["events"]["duplicate_lines_not_billed"] == 1  # the edge's retry of evt_a1
        assert {event["source_file"] for event in events} == {
            next(e["source_file"] for e in events if e["event_id"] == "evt_a1"),
            next(e["source_file"] for e in events if e["event_id"] == "evt_a2"),
        }
        assert Decimal(body["rating"]["amount_minor_exact"]) == Decimal("99.9")
        assert Decimal(body["ledger"]["accrued_minor"]) == Decimal("99.9")  # r1 + r2
        assert len(body["ledger"]["revisions"]) == 2
        assert body["invoice_line"]["amount_minor"] is not None
        assert body["daily_aggregate"]["input_tokens"] == 370_000

        # Forward: a duplicate, a conflict, an unknown customer's event.
        retried = client.get("/explain", params={"event_id": "evt_a1"}).json()["lines"]
        assert [line["outcome"] for line in retried] == ["billed", "duplicate"]
        assert retried[1]["duplicate_of"]["source_file"] == retried[0]["source_file"]
        assert f"{ALPHA}:nimbus_large__input_tokens:2026-10-01" in {
            slot["ledger_slot"] for slot in retried[0]["slots"]
        }
        conflicted = client.get("/explain", params={"event_id": "evt_b1"}).json()["lines"]
        assert [(line["outcome"], line.get("reason")) for line in conflicted] == [
            ("billed", None),
            ("quarantined", "conflicting_duplicate"),
        ]
        ghost = client.get("/explain", params={"event_id": "evt_x1"}).json()["lines"]
        assert [(line["outcome"], line["reason"]) for line in ghost] == [
            ("quarantined", "unknown_customer")
        ]
        missing = client.get("/explain", params={"event_id": "evt_never"})
        assert (missing.status_code, missing.json()["error"]["code"]) == (404, "unknown_event")
        half = client.get("/explain", params={"customer": ALPHA})
        assert (half.status_code, half.json()["error"]["code"]) == (422, "invalid_request")
        unknown = client.get("/explain", params=params | {"customer": GHOST})
        assert unknown.status_code == 404

        # The customer's state: the ledger live, the warehouse as of the snapshot.
        state = client.get(f"/customers/{BETA}", params={"period": "2026-10"}).json()
        balances = {b["account"]: b["amount_minor"] for b in state["ledger"]["balances"]}
        assert balances == {"unbilled_receivable": "27.2"}
        assert state["ledger"]["as_of"]
        assert state["warehouse"]["as_of"]
        usage = {u["meter_id"]: u for u in state["warehouse"]["usage_to_date"]}
        assert int(usage["nimbus_small__input_tokens"]["quantity_units"]) == 510_000
        assert state["warehouse"]["plan"]["plan_id"] == "starter"
        assert state["not_built"] == {}
        entitlement = state["warehouse"]["entitlement"]  # Starter's cap: 60,000 a month
        assert (entitlement["state"], entitlement["spend_cap_minor"]) == ("ok", "60000")
        assert entitlement["spend_minor"] == "27.2"
        assert state["warehouse"]["allowances"] == []  # the hand fixture's plans include none

        findings = client.get("/anomalies")
        assert findings.status_code == 200, findings.text
        detected = [f["detected_at"] for f in findings.json()["anomalies"]]
        assert detected == sorted(detected, reverse=True)
