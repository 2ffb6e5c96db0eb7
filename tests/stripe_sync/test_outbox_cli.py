"""``meterbook stripe outbox`` shows dead letters and failing writes with Stripe's error."""

from __future__ import annotations

from datetime import date

import psycopg
import pytest
from typer.testing import CliRunner

from orchestration.cli import app
from stripe_sync import outbox
from stripe_sync.meter_events import METER_EVENT_OPERATION, MeterSlot, plan_meter_events

DAY = date(2026, 10, 1)


def test_the_outbox_command_lists_problems_and_fails_on_dead_letters(
    ledger_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("METERBOOK_LEDGER_URL", ledger_url)
    runner = CliRunner()
    with psycopg.connect(ledger_url, autocommit=True) as conn:
        outbox.ensure_schema(conn)
        slots = [MeterSlot(f"cus_{n}", "requests", DAY, n + 1) for n in range(3)]
        intents, _ = plan_meter_events(slots, recorded={}, usage_dates={DAY})
        outbox.record_intents(conn, intents)
        clean = runner.invoke(app, ["stripe", "outbox"])
        assert clean.exit_code == 0, clean.output
        assert "sent 0, pending 3, dead 0" in clean.output
        first, second, _ = outbox.pending_writes(conn, METER_EVENT_OPERATION)
        outbox.record_outcomes(
            conn,
            [
                outbox.WriteOutcome(first.id, "dead", 1, None, "No such customer: 'cus_0'"),
                outbox.WriteOutcome(second.id, "pending", 6, None, "Too many requests"),
            ],
        )
    result = runner.invoke(app, ["stripe", "outbox"])
    assert result.exit_code == 1
    assert "sent 0, pending 2, dead 1" in result.output
    assert "dead    meter_event cus_0:requests:2026-10-01 r1 after 1 attempts: No such" in (
        result.output
    )
    assert "pending meter_event cus_1:requests:2026-10-01 r1 after 6 attempts: Too many" in (
        result.output
    )
