"""The Great Expectations suite that gates accepted usage events before anything is billed.

It validates a *profile* of the partition rather than the raw rows: one row per customer, day,
event type, what was used (a model call's model, a tool call's tool) and request kind with
counts, minima and maxima. Every expectation here (not
null, in set, between) holds for all events exactly when it holds for their profile, so nothing is
sampled away, and a day of 20 M events validates as a few thousand rows.

The suite is run by ``gx_runner``, which imports ``great_expectations`` lazily.
"""

from __future__ import annotations

from datetime import date
from typing import Any

import duckdb

from ingestion.usage_events import (
    KNOWN_EVENT_TYPES,
    MAX_COST_MINOR_PER_EVENT,
    MAX_LATENESS_DAYS,
    MAX_TOKENS_PER_EVENT,
)
from orchestration.quality.gx_runner import SuiteOutcome, run_suite

PROFILE_SQL = """
select
    lines.customer_id,
    lines.usage_date,
    lines.event_type,
    case lines.event_type when 'tool_call' then lines.tool else lines.model end as used,
    lines.request_kind,
    count(*) as events,
    count(*) filter (where lines.event_id is null or lines.event_id = '') as missing_event_ids,
    min(lines.input_tokens) as input_tokens_min,
    max(lines.input_tokens) as input_tokens_max,
    min(lines.output_tokens) as output_tokens_min,
    max(lines.output_tokens) as output_tokens_max,
    min(lines.cache_read_tokens) as cache_read_tokens_min,
    max(lines.cache_read_tokens) as cache_read_tokens_max,
    min(lines.cost_minor) as cost_minor_min,
    max(lines.cost_minor) as cost_minor_max,
    max(date_diff('minute', lines.occurred_at, lines.received_at)) / 60.0 as lateness_hours_max,
    min(date_diff('second', lines.occurred_at, lines.received_at)) as arrival_lag_seconds_min,
    bool_and(customers.id is not null) as is_known_customer
from ingest.usage_event_lines as lines
left join (select distinct id from stripe_raw.customers) as customers
    on lines.customer_id = customers.id
where lines.status = 'accepted'
  and lines.arrival_date >= ? and lines.arrival_date < ?
group by all
"""


def usage_profile(conn: duckdb.DuckDBPyConnection, start: date, end: date) -> Any:
    """The profile of accepted events that arrived in ``[start, end)``, as a pandas frame."""
    return conn.execute(PROFILE_SQL, [start, end]).df()


def build_suite(gx: Any) -> Any:
    expectations = gx.expectations
    token_columns = [
        f"{field}_{bound}"
        for field in ("input_tokens", "output_tokens", "cache_read_tokens")
        for bound in ("min", "max")
    ]
    suite = gx.ExpectationSuite(name="accepted_usage_events")
    for column in ("customer_id", "usage_date", "event_type", "used"):
        suite.add_expectation(expectations.ExpectColumnValuesToNotBeNull(column=column))
    suite.add_expectation(
        expectations.ExpectColumnValuesToBeInSet(
            column="event_type", value_set=list(KNOWN_EVENT_TYPES)
        )
    )
    suite.add_expectation(
        expectations.ExpectColumnValuesToBeBetween(
            column="missing_event_ids", min_value=0, max_value=0
        )
    )
    for column in token_columns:
        suite.add_expectation(
            expectations.ExpectColumnValuesToBeBetween(
                column=column, min_value=0, max_value=MAX_TOKENS_PER_EVENT
            )
        )
    for column in ("cost_minor_min", "cost_minor_max"):
        suite.add_expectation(
            expectations.ExpectColumnValuesToBeBetween(
                column=column, min_value=0, max_value=MAX_COST_MINOR_PER_EVENT
            )
        )
    suite.add_expectation(
        expectations.ExpectColumnValuesToBeBetween(
            column="lateness_hours_max", min_value=0, max_value=MAX_LATENESS_DAYS * 24
        )
    )
    suite.add_expectation(
        expectations.ExpectColumnValuesToBeBetween(column="arrival_lag_seconds_min", min_value=-300)
    )
    suite.add_expectation(
        expectations.ExpectColumnValuesToBeInSet(column="is_known_customer", value_set=[True])
    )
    return suite


def validate_usage_profile(profile: Any) -> SuiteOutcome:
    """Run the suite over the profile; return the failing expectations with sample rows."""
    return run_suite(
        "accepted_usage_events",
        build_suite,
        profile,
        row_identity=["customer_id", "usage_date", "event_type", "used"],
    )


def profiled_events(profile: Any) -> int:
    return int(profile["events"].sum()) if len(profile) else 0
