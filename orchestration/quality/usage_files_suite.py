"""The gate on a day's raw usage files: did the producer's event format change?

Ingestion quarantines every line that breaks the event schema, so nothing is lost; but a day
where most lines do is a format change upstream, and billing the few lines left would
under-bill every customer quietly. This suite blocks such a day until the files are fixed.
"""

from __future__ import annotations

from datetime import date
from typing import Any

import duckdb

from orchestration.quality.gx_runner import SuiteOutcome, run_suite
from orchestration.quality.thresholds import Thresholds

# Quarantine reasons that mean "the line does not have the event's shape", as opposed to a
# well-formed event that is rejected for its content (unknown customer, too late, too large).
SCHEMA_ERROR_REASONS = """
    reason in ('invalid_json', 'not_a_json_object', 'line_too_long')
    or reason like 'missing\\_%' escape '\\'
    or reason like 'invalid\\_%' escape '\\'
    or reason like '%\\_without\\_time\\_zone' escape '\\'
"""

PROFILE_SQL = f"""
with files as (
    select arrival_date, cast(sum(raw_lines) as bigint) as raw_lines, count(*) as files
    from ingest.usage_files
    where arrival_date >= ? and arrival_date < ?
    group by arrival_date
),
schema_errors as (
    select arrival_date, count(*) as schema_error_lines,
           mode(reason) as most_common_reason
    from ingest.invalid_usage_lines
    where arrival_date >= ? and arrival_date < ? and ({SCHEMA_ERROR_REASONS})
    group by arrival_date
)
select
    cast(files.arrival_date as varchar) as arrival_date,
    files.files,
    files.raw_lines,
    coalesce(schema_errors.schema_error_lines, 0) as schema_error_lines,
    cast(coalesce(schema_errors.schema_error_lines, 0) as decimal(18, 6))
        / greatest(files.raw_lines, 1) as schema_error_share,
    schema_errors.most_common_reason as most_common_schema_error,
    not (files.raw_lines >= ? and
         coalesce(schema_errors.schema_error_lines, 0) > files.raw_lines * ?)
        as schema_mostly_valid
from files
left join schema_errors using (arrival_date)
"""


def usage_files_profile(
    conn: duckdb.DuckDBPyConnection, start: date, end: date, thresholds: Thresholds
) -> Any:
    """One row per arrival day of the window with its share of schema errors."""
    return conn.execute(
        PROFILE_SQL,
        [
            start,
            end,
            start,
            end,
            thresholds.min_lines_for_schema_share,
            thresholds.max_schema_error_share,
        ],
    ).df()


def build_suite(gx: Any) -> Any:
    suite = gx.ExpectationSuite(name="usage_files")
    suite.add_expectation(
        gx.expectations.ExpectColumnValuesToBeInSet(column="schema_mostly_valid", value_set=[True])
    )
    return suite


def validate_usage_files(profile: Any) -> SuiteOutcome:
    return run_suite(
        "usage_files",
        build_suite,
        profile,
        row_identity=[
            "arrival_date",
            "raw_lines",
            "schema_error_lines",
            "most_common_schema_error",
        ],
    )
