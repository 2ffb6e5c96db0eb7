"""The pipeline's Stripe client has no path of its own for the local server: it is configured
by addresses alone, as it would be for Stripe's test mode."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import psycopg
import pytest

from orchestration.resources import build_resources
from orchestration.settings import get_settings
from stripe_local.server import LocalStripeServer
from stripe_sync import outbox
from stripe_sync.meter_event_stream import send_pending_meter_events_stream
from stripe_sync.meter_events import MeterSlot, ensure_meters, plan_meter_events

DAY = date(2026, 10, 1)


def test_the_client_works_at_any_fixed_address_with_any_test_key(
    tmp_path: Path, ledger_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    customers = tmp_path / "customers.csv"
    customers.write_text("id,email,name,currency,created,metadata\ncus_1,a@b.c,A,usd,0,{}\n")
    with LocalStripeServer(now="2026-10-05T00:00:00Z", seed_customers_csv=customers) as server:
        # What an operator sets for Stripe's test mode, with this server's address instead.
        monkeypatch.setenv("METERBOOK_DATA_DIR", str(tmp_path / "data"))
        monkeypatch.setenv("METERBOOK_STRIPE_API_BASE", server.url)
        monkeypatch.setenv("METERBOOK_STRIPE_METER_EVENTS_BASE", server.url)
        monkeypatch.setenv("METERBOOK_STRIPE_LOCAL_AUTOSTART", "0")
        monkeypatch.setenv("STRIPE_API_KEY", "sk_test_fixed_address_0001")
        resource = build_resources(get_settings())["stripe"]
        resource = resource.model_copy(update={"api_key": "sk_test_fixed_address_0001"})  # type: ignore[attr-defined]
        client = resource.client()
        ensure_meters(client, [("requests", "Requests")])
        with psycopg.connect(ledger_url, autocommit=True) as conn:
            outbox.ensure_schema(conn)
            intents, _ = plan_meter_events(
                [MeterSlot("cus_1", "requests", DAY, 7)], recorded={}, usage_dates={DAY}
            )
            outbox.record_intents(conn, intents)
            report = send_pending_meter_events_stream(conn, client, resource.client_with_key)
        assert report.sent == 1
        assert server.store.meter_event_count() == 1
        assert not (tmp_path / "data" / "stripe_local.pid").exists()  # nothing was started


def test_stripe_itself_is_the_default_outside_this_machine(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("METERBOOK_STRIPE_API_BASE", "https://api.stripe.com")
    monkeypatch.delenv("METERBOOK_STRIPE_METER_EVENTS_BASE", raising=False)
    settings = get_settings()
    assert settings.stripe_meter_events_base == "https://meter-events.stripe.com"
    assert not settings.uses_local_stripe
