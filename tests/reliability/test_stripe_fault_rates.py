"""Reliability: usage reaches Stripe exactly once while the local Stripe injects 429s, 500s,
timeouts and answers lost after the commit in 10 %, 30 % and 50 % of API requests (see
``tests/reliability/stripe_fault_rates.py``).

CI runs the reduced form: the shared clean run's rated usage (``clean_baseline``) sent again at
each rate through the job's Stripe steps alone (sending, the outbox's totals, the read-back),
meter events on v1 (one request each), into a fresh outbox. ``bench/reliability_stripe_faults.py``
runs the full form (whole pipelines, 4 days of 5 customers, and 0 % for the time overhead) and
writes the figures to ``docs/reliability.md``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.reliability import reruns
from tests.reliability import stripe_fault_rates as kit

pytestmark = pytest.mark.reliability

# The ledger is not re-posted here (only the Stripe steps run): its fields are the clean run's
# alone.
LEDGER_FIELDS = ("ledger_content_hash", "ledger_transactions", "ledger_totals")


def test_usage_reaches_stripe_exactly_once_at_every_fault_rate(
    clean_baseline: reruns.Baseline,
    new_database: Callable[[], str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clean = clean_baseline.state
    assert clean.problems() == []
    results = []
    for rate in kit.RATES:
        result = kit.resend_at_rate(
            rate,
            clean_baseline,
            tmp_path / f"rate{int(rate * 100)}",
            new_database(),
            monkeypatch.setenv,
        )
        assert result.exactly_once_problems() == [], f"at {rate:.0%}"
        assert result.faults > 0
        # Faults change how often requests are made, never what is sent: the clean run's
        # outbox writes, meter events, Stripe usage and read-back, at every rate.
        assert clean.differences(result.fingerprint, ignore=LEDGER_FIELDS) == [], f"{rate:.0%}"
        results.append(result)
    # Writes were among the requests the faults hit (which request draws which fault depends
    # on how the sender's threads interleave, so this is counted over all rates).
    assert sum(r.write_attempts for r in results) > sum(r.writes for r in results)
