"""The gates' suites on small warehouses built by hand: their SQL profile and their GX
expectations together, each shown passing on clean data and failing on the broken row."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

import duckdb
import pytest

from ledger.model import Entry, Transaction
from orchestration import ledger_batches
from orchestration.quality.invoice_lines_suite import invoice_lines_profile, validate_invoice_lines
from orchestration.quality.ledger_batch_suite import ledger_batch_profile, validate_ledger_batch
from orchestration.quality.staging_usage_suite import (
    staging_usage_profile,
    validate_staging_usage,
)
from orchestration.quality.thresholds import DEFAULT_THRESHOLDS_FILE, load_thresholds
from orchestration.quality.usage_files_suite import usage_files_profile, validate_usage_files

DAY = date(2026, 10, 1)
NEXT_DAY = date(2026, 10, 2)


def _failed_columns(failures: list[dict[str, object]]) -> set[str]:
    return {str(f["kwargs"]["column"]) for f in failures}  # type: ignore[index]


@pytest.fixture
def warehouse() -> duckdb.DuckDBPyConnection:
    conn = duckdb.connect(":memory:")
    conn.execute("create schema ingest")
    conn.execute(
        "create table ingest.partition_usage_dates (arrival_date date, usage_date date);"
        "insert into ingest.partition_usage_dates values ('2026-10-01', '2026-10-01')"
    )
    return conn


def test_staging_suite_passes_clean_events_and_names_each_broken_invariant(
    warehouse: duckdb.DuckDBPyConnection,
) -> None:
    warehouse.execute(
        """
        create table stg_usage__events as select * from (values
            ('e1', 'cus_a', 'model_call', 'm', timestamp '2026-10-01 10:00', date '2026-10-01',
             date '2026-10-01', 10, 5, 0, null, 0),
            ('e2', 'cus_a', 'model_call', 'm', timestamp '2026-10-01 11:00', date '2026-10-01',
             date '2026-10-01', 20, 5, 1, null, 0),
            ('e4', 'cus_a', 'tool_call', null, timestamp '2026-10-01 11:00', date '2026-10-01',
             date '2026-10-01', 0, 0, 0, 'web_search', 7)
        ) as t(event_id, customer_id, event_type, model, occurred_at, usage_date, arrival_date,
               input_tokens, output_tokens, cache_read_tokens, tool, cost_minor)
        """
    )
    clean = validate_staging_usage(staging_usage_profile(warehouse, DAY, NEXT_DAY))
    assert clean.success, clean.failures

    warehouse.execute(
        """
        insert into stg_usage__events values
            ('e1', 'cus_b', 'model_call', 'm', timestamp '2026-10-01 10:00', date '2026-10-01',
             date '2026-10-01', 10, 5, 0, null, 0),
            ('e3', 'cus_c', 'model_call', 'm', timestamp '2026-09-30 23:59', date '2026-10-01',
             date '2026-10-01', 1, -1, 0, null, 0),
            ('e5', 'cus_d', 'tool_call', null, timestamp '2026-10-01 12:00', date '2026-10-01',
             date '2026-10-01', 0, 0, 0, null, -2)
        """
    )
    broken = validate_staging_usage(staging_usage_profile(warehouse, DAY, NEXT_DAY))
    assert not broken.success
    assert _failed_columns(broken.failures) == {
        "events_with_repeated_ids",
        "tokens_min",
        "usage_date_is_occurrence_date",
        "used",
        "cost_minor_min",
    }
    assert {row["customer_id"] for row in broken.sample_rows} == {
        "cus_a",
        "cus_b",
        "cus_c",
        "cus_d",
    }


def test_invoice_lines_suite_checks_sign_scale_currency_and_the_recorded_rounding(
    warehouse: duckdb.DuckDBPyConnection,
) -> None:
    warehouse.execute(
        """
        create table invoice_lines (
            customer_id varchar, billing_period_start_date date, billing_period_end_date date,
            line_type varchar, line_id varchar, currency varchar, quantity_units bigint,
            amount_minor_exact decimal(38, 12), amount_minor bigint,
            rounding_minor decimal(38, 12));
        insert into invoice_lines values
            ('cus_a', '2026-10-01', '2026-11-01', 'usage', 'm1', 'usd', 3, 12.5, 13, 0.5),
            ('cus_a', '2026-10-01', '2026-11-01', 'proration_credit', 'sub_1', 'usd', 60,
             -500, -500, 0),
            ('cus_a', '2026-09-01', '2026-10-01', 'usage', 'm1', 'usd', 3, -7, -7, 0);
        """
    )
    clean = validate_invoice_lines(invoice_lines_profile(warehouse, DAY, NEXT_DAY))
    assert clean.success, clean.failures  # September's negative line is not in the periods

    warehouse.execute(
        """
        insert into invoice_lines values
            ('cus_b', '2026-10-01', '2026-11-01', 'usage', 'm1', 'USD', 1, 1.25, 1, 0.25),
            ('cus_c', '2026-10-01', '2026-11-01', 'usage', 'm1', 'usd', 1, -2, -2, 0),
            ('cus_d', '2026-10-01', '2026-11-01', 'refund', null, 'usd', 1, 2, 2, 0)
        """
    )
    broken = validate_invoice_lines(invoice_lines_profile(warehouse, DAY, NEXT_DAY))
    assert _failed_columns(broken.failures) == {
        "currency",
        "amount_sign_fits_line_type",
        "rounding_is_recorded",
        "line_type",
        "line_id",
    }
    assert {row["customer_id"] for row in broken.sample_rows} == {"cus_b", "cus_c", "cus_d"}


def _accrual(key: str, amount: str) -> Transaction:
    return Transaction(
        key=key,
        kind="usage_accrual",
        cause_type="usage_slot",
        cause_id="cus_a:m1:2026-10-01",
        effective_at=datetime(2026, 10, 1, tzinfo=UTC),
        entries=(
            Entry("customer:cus_a:unbilled_receivable", Decimal(amount), "usd"),
            Entry("platform:usage_revenue", -Decimal(amount), "usd"),
        ),
        metadata={"revision": "1"},
    )


def test_a_staged_batch_reads_back_as_the_same_transactions(
    warehouse: duckdb.DuckDBPyConnection,
) -> None:
    planned = [
        _accrual("usage_accrual:cus_a:m1:2026-10-01:r1", "0.000000000001"),
        _accrual("usage_accrual:cus_a:m2:2026-10-01:r1", "12345678901234.5"),
    ]
    late = _accrual("usage_accrual:cus_a:m3:2026-10-01:r1", "-7.25")
    planned.append(replace(late, effective_at=datetime(2026, 10, 1, 23, 59, 59, 999999, UTC)))
    # Written as text and cast back: every amount, time and metadata exact.
    assert ledger_batches.write_batch(warehouse, DAY, NEXT_DAY, planned) == 6
    read = ledger_batches.read_batch(warehouse, DAY, NEXT_DAY)
    assert sorted(t.content_hash() for t in read) == sorted(t.content_hash() for t in planned)
    assert ledger_batches.write_batch(warehouse, DAY, NEXT_DAY, planned[:1]) == 2  # replaced
    read = ledger_batches.read_batch(warehouse, DAY, NEXT_DAY)
    assert [t.content_hash() for t in read] == [planned[0].content_hash()]
    assert ledger_batches.read_batch(warehouse, NEXT_DAY, date(2026, 10, 3)) == []


def test_the_batch_suite_finds_the_unbalanced_transaction(
    warehouse: duckdb.DuckDBPyConnection,
) -> None:
    planned = [
        _accrual("usage_accrual:cus_a:m1:2026-10-01:r1", "1.5"),
        _accrual("usage_accrual:cus_a:m2:2026-10-01:r2", "2"),
    ]
    ledger_batches.write_batch(warehouse, DAY, NEXT_DAY, planned)
    clean = validate_ledger_batch(ledger_batch_profile(warehouse, DAY, NEXT_DAY))
    assert clean.success, clean.failures
    empty = validate_ledger_batch(ledger_batch_profile(warehouse, NEXT_DAY, date(2026, 10, 3)))
    assert empty.success and empty.rows == 0

    warehouse.execute(
        "update billing.ledger_batch_entries set amount_minor = -1.4 "
        "where transaction_key like '%m1%' and entry_index = 1"
    )
    warehouse.execute(
        "update billing.ledger_batch_entries set transaction_key = 'accrual:cus_a:m2' "
        "where transaction_key like '%m2%'"
    )
    broken = validate_ledger_batch(ledger_batch_profile(warehouse, DAY, NEXT_DAY))
    assert _failed_columns(broken.failures) == {"transaction_key", "is_balanced"}
    assert {"transaction_key": "usage_accrual:cus_a:m1:2026-10-01:r1", "currency": "usd",
            "imbalance_minor": "0.100000000000"} in broken.sample_rows  # fmt: skip


def test_the_files_suite_blocks_a_day_that_mostly_fails_the_schema(
    warehouse: duckdb.DuckDBPyConnection, tmp_path: Path
) -> None:
    warehouse.execute(
        """
        create table ingest.usage_files (arrival_date date, source_file varchar,
                                         raw_lines bigint);
        create table ingest.invalid_usage_lines (arrival_date date, reason varchar);
        insert into ingest.usage_files values ('2026-10-01', 'a', 150), ('2026-10-01', 'b', 50);
        insert into ingest.invalid_usage_lines
            select '2026-10-01', 'missing_input_tokens' from range(90);
        insert into ingest.invalid_usage_lines
            select '2026-10-01', 'unknown_customer' from range(60);
        """
    )
    thresholds = load_thresholds()
    assert thresholds.max_schema_error_share == Decimal("0.5")
    # 90 of 200 lines fail the schema (unknown customers are well-formed): 45 %, passes.
    assert validate_usage_files(usage_files_profile(warehouse, DAY, NEXT_DAY, thresholds)).success
    warehouse.execute(
        "insert into ingest.invalid_usage_lines select '2026-10-01', 'invalid_json' from range(11)"
    )
    broken = validate_usage_files(usage_files_profile(warehouse, DAY, NEXT_DAY, thresholds))
    assert not broken.success
    assert broken.sample_rows == [
        {
            "arrival_date": "2026-10-01",
            "raw_lines": "200",
            "schema_error_lines": "101",
            "most_common_schema_error": "missing_input_tokens",
        }
    ]

    few_lines = tmp_path / "thresholds.toml"
    few_lines.write_text(
        DEFAULT_THRESHOLDS_FILE.read_text().replace(
            "min_lines_for_schema_share = 100", "min_lines_for_schema_share = 500"
        )
    )
    lenient = load_thresholds(few_lines)
    assert validate_usage_files(usage_files_profile(warehouse, DAY, NEXT_DAY, lenient)).success


def test_a_thresholds_file_missing_a_key_says_which(tmp_path: Path) -> None:
    partial = tmp_path / "quality.toml"
    partial.write_text("[gates]\nmax_schema_error_share = 0.2\n")
    with pytest.raises(ValueError, match="min_lines_for_schema_share"):
        load_thresholds(partial)
