"""The Great Expectations gate: passes clean profiles, names what is wrong in bad ones."""

from __future__ import annotations

from datetime import date

import pandas as pd

from orchestration.quality.usage_suite import profiled_events, validate_usage_profile


def _profile(**overrides: object) -> pd.DataFrame:
    row: dict[str, object] = {
        "customer_id": "cus_a",
        "usage_date": date(2026, 10, 1),
        "event_type": "model_call",
        "used": "nimbus-large",
        "request_kind": "agent",
        "events": 3,
        "missing_event_ids": 0,
        "input_tokens_min": 0,
        "input_tokens_max": 500,
        "output_tokens_min": 1,
        "output_tokens_max": 9,
        "cache_read_tokens_min": 0,
        "cache_read_tokens_max": 0,
        "cost_minor_min": 0,
        "cost_minor_max": 0,
        "lateness_hours_max": 2.5,
        "arrival_lag_seconds_min": 0,
        "is_known_customer": True,
    }
    row.update(overrides)
    return pd.DataFrame([row])


def test_a_clean_profile_passes() -> None:
    profile = _profile()
    outcome = validate_usage_profile(profile)
    assert outcome.success, outcome.failures
    assert profiled_events(profile) == 3


def test_bad_values_fail_with_the_expectation_named() -> None:
    bad = pd.concat(
        [_profile(), _profile(customer_id="cus_b", input_tokens_min=-1, is_known_customer=False)]
    )
    outcome = validate_usage_profile(bad)
    assert not outcome.success
    failed = {(f["expectation"], f["kwargs"]["column"]) for f in outcome.failures}
    assert ("expect_column_values_to_be_between", "input_tokens_min") in failed
    assert ("expect_column_values_to_be_in_set", "is_known_customer") in failed
    assert len(failed) == 2
