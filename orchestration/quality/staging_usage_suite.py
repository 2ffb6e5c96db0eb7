"""The gate on staged usage (``stg_usage__events``), the typed events dbt rates.

Like the accepted-events suite it validates a profile (one row per customer, usage date, event
type and model or tool), so it costs a scan, not a copy. It adds what only holds after staging:
typed non-negative token counts and tool costs, each event's usage date being its UTC
occurrence date, arrival no earlier than occurrence, and every event id appearing once across
all staged usage — a day loaded twice would otherwise be rated twice.
"""

from __future__ import annotations

from datetime import date
from typing import Any

import duckdb

from orchestration.quality.gx_runner import SuiteOutcome, run_suite

PROFILE_SQL = """
with partition_events as (
    select * from stg_usage__events where arrival_date >= ? and arrival_date < ?
),
repeated_event_ids as (
    select event_id
    from stg_usage__events
    where event_id in (select event_id from partition_events)
    group by event_id
    having count(*) > 1
)
select
    customer_id,
    usage_date,
    event_type,
    case event_type when 'tool_call' then tool else model end as used,
    count(*) as events,
    count(*) filter (where event_id in (select event_id from repeated_event_ids))
        as events_with_repeated_ids,
    least(min(input_tokens), min(output_tokens), min(cache_read_tokens)) as tokens_min,
    min(cost_minor) as cost_minor_min,
    bool_and(usage_date = cast(occurred_at as date)) as usage_date_is_occurrence_date,
    bool_and(arrival_date >= usage_date) as arrived_after_occurrence
from partition_events
group by all
"""


def staging_usage_profile(conn: duckdb.DuckDBPyConnection, start: date, end: date) -> Any:
    """The profile of staged events that arrived in ``[start, end)``, as a pandas frame."""
    return conn.execute(PROFILE_SQL, [start, end]).df()


def build_suite(gx: Any) -> Any:
    expectations = gx.expectations
    suite = gx.ExpectationSuite(name="staging_usage_events")
    for column in ("customer_id", "usage_date", "event_type", "used", "tokens_min"):
        suite.add_expectation(expectations.ExpectColumnValuesToNotBeNull(column=column))
    suite.add_expectation(
        expectations.ExpectColumnValuesToBeBetween(
            column="events_with_repeated_ids", min_value=0, max_value=0
        )
    )
    for column in ("tokens_min", "cost_minor_min"):
        suite.add_expectation(
            expectations.ExpectColumnValuesToBeBetween(column=column, min_value=0)
        )
    for column in ("usage_date_is_occurrence_date", "arrived_after_occurrence"):
        suite.add_expectation(
            expectations.ExpectColumnValuesToBeInSet(column=column, value_set=[True])
        )
    return suite


def validate_staging_usage(profile: Any) -> SuiteOutcome:
    return run_suite(
        "staging_usage_events",
        build_suite,
        profile,
        row_identity=["customer_id", "usage_date", "event_type", "used"],
    )
