"""Reliability: days run out of order, a run killed by SIGKILL mid-way and days run again
leave what one clean run leaves (see ``tests/reliability/reruns.py``).

One pipeline runs the later days first (their late usage belongs to earlier days not run yet,
and a conflicting copy of an earlier day's event is accepted for now), then the earlier days in
a child process killed right after Stripe accepted a meter event batch and before the outbox
recorded it (the sharpest exactly-once point), then every day again as one backfill, which
overlaps both. It is compared with the shared clean run (``clean_baseline``). Reduced (CI): 2
days, day 2 then day 1; ``METERBOOK_RELIABILITY_SCALE=full``: 7 days, 04-07 then 01-03.
``bench/reliability_reruns.py`` runs the full form's five re-run passes and two out-of-order
passes and writes the figures to ``docs/reliability.md``.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest

from tests.reliability import crashes, reruns
from tests.reliability.pipeline_state import ORDER_DEPENDENT, PipelineFingerprint

pytestmark = pytest.mark.reliability

CRASH_AT = "stripe.after_request_before_outbox_update"


def test_days_out_of_order_a_crash_and_a_rerun_leave_what_one_clean_run_leaves(
    clean_baseline: reruns.Baseline,
    new_database: Callable[[], str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clean = clean_baseline.state
    assert clean.problems() == []
    assert clean.meter_events_accepted > 0
    scale = clean_baseline.scale
    split = reruns.FIRST_DAY + timedelta(days=scale.days // 2)
    earlier = (reruns.FIRST_DAY, split - timedelta(days=1))
    later = (split, scale.last_day)

    with reruns.pipeline(
        "out of order", tmp_path / "data", new_database(), scale, monkeypatch.setenv
    ) as target:
        assert target.run(later).success
        first = target.fingerprint()
        # Late usage of a day not run yet was billed in the ledger (else this test lost its
        # point); Stripe was sent nothing an earlier day could still lower.
        billed_days = {slot.rsplit(":", 1)[-1] for slot, *_ in first.ledger_totals}
        assert billed_days & reruns.days_of([earlier])
        assert first.meter_slots_held > 0
        assert _above(first, clean) == []

        crashed = target.run_killed_at(earlier, CRASH_AT)
        assert crashed.killed, f"not killed (exit {crashed.returncode}): {crashed.tail()}"
        assert crashes.crash_invariant_problems(target.ledger_url, target.server) == []
        assert target.server.store.meter_events(), "the crash came before Stripe took a batch"
        assert _above(target.fingerprint(), clean) == []

        assert target.run((reruns.FIRST_DAY, scale.last_day)).success
        final = target.fingerprint()
        assert target.dagster_runs_started() == []
    assert final.problems() == []
    # The ledger holds the same totals (in other revisions: order-dependent), the warehouse
    # the same rating and reconciliation, Stripe exactly the usage rated. Held back until
    # their days ran, slots went to Stripe once each, as in the clean run: the same outbox
    # writes and meter events.
    assert clean.differences(final, ignore=ORDER_DEPENDENT) == []
    assert (final.outbox, final.meter_events_accepted) == (
        clean.outbox,
        clean.meter_events_accepted,
    )


def _above(state: PipelineFingerprint, clean: PipelineFingerprint) -> list[str]:
    """Slots where Stripe holds more than the clean run rated: usage that cannot be taken
    back."""
    expected = {(c, m, d): q for c, m, d, q in clean.stripe_usage}
    return [
        f"{c}:{m}:{d}: {q} > {expected.get((c, m, d), 0)}"
        for c, m, d, q in state.stripe_usage
        if q > expected.get((c, m, d), 0)
    ]
