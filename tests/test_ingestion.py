"""Ingestion: validation, quarantine reasons, cross-day dedup and conservation of lines."""

from __future__ import annotations

import gzip
import json
from datetime import date
from pathlib import Path

import duckdb
import pytest

from ingestion.stripe_exports import load_stripe_exports
from ingestion.usage_events import IngestionError, ingest_usage_day
from tests.hand_fixture import ALPHA, BETA, EXPECTED_COUNTS, write_hand_fixture

DAY_1 = date(2026, 10, 1)
DAY_2 = date(2026, 10, 2)


@pytest.fixture
def warehouse(tmp_path: Path) -> duckdb.DuckDBPyConnection:
    write_hand_fixture(tmp_path)
    conn = duckdb.connect(str(tmp_path / "warehouse.duckdb"))
    load_stripe_exports(conn, stripe_dir=tmp_path / "raw" / "stripe")
    yield conn
    conn.close()


def _statuses(conn: duckdb.DuckDBPyConnection) -> list[tuple[str, str, str]]:
    return conn.execute(
        "select event_id, cast(arrival_date as varchar), status from ingest.usage_event_lines "
        "order by event_id, received_at"
    ).fetchall()


def _totals(conn: duckdb.DuckDBPyConnection) -> tuple[int, int, int, int]:
    row = conn.execute(
        "select sum(raw_lines), sum(accepted_lines), sum(duplicate_lines), sum(quarantined_lines) "
        "from ingest.usage_file_counts"
    ).fetchone()
    assert row is not None
    return tuple(int(v) for v in row)  # type: ignore[return-value]


def test_lines_are_accounted_for_and_deduplicated_across_days(
    warehouse: duckdb.DuckDBPyConnection, tmp_path: Path
) -> None:
    raw_dir = tmp_path / "raw" / "usage"
    first = ingest_usage_day(warehouse, raw_usage_dir=raw_dir, arrival_date=DAY_1)
    assert (first.raw_lines, first.accepted_lines, first.duplicate_lines) == (5, 2, 1)
    assert first.quarantined_lines == 2
    second = ingest_usage_day(warehouse, raw_usage_dir=raw_dir, arrival_date=DAY_2)
    assert (second.raw_lines, second.accepted_lines, second.quarantined_lines) == (3, 2, 1)
    # The late event of day 2 touches 1 October as well as 2 October.
    assert second.usage_dates == (DAY_1, DAY_2)
    assert _totals(warehouse) == (
        EXPECTED_COUNTS["raw"],
        EXPECTED_COUNTS["accepted"],
        EXPECTED_COUNTS["duplicates"],
        EXPECTED_COUNTS["quarantined"],
    )
    reasons = dict(
        warehouse.execute(
            "select split_part(reason, ':', 1), count(*) from ingest.quarantined_usage_lines "
            "group by 1"
        ).fetchall()
    )
    assert reasons == {"invalid_json": 1, "unknown_customer": 1, "conflicting_duplicate": 1}


def test_order_of_days_does_not_change_the_outcome(
    warehouse: duckdb.DuckDBPyConnection, tmp_path: Path
) -> None:
    raw_dir = tmp_path / "raw" / "usage"
    ingest_usage_day(warehouse, raw_usage_dir=raw_dir, arrival_date=DAY_2)
    ingest_usage_day(warehouse, raw_usage_dir=raw_dir, arrival_date=DAY_1)
    out_of_order = _statuses(warehouse)
    ingest_usage_day(warehouse, raw_usage_dir=raw_dir, arrival_date=DAY_2)
    ingest_usage_day(warehouse, raw_usage_dir=raw_dir, arrival_date=DAY_1)
    assert _statuses(warehouse) == out_of_order
    # evt_b1's first copy arrived on day 1; the day-2 copy differs, so it is the conflict.
    assert ("evt_b1", "2026-10-01", "accepted") in out_of_order
    assert ("evt_b1", "2026-10-02", "conflict") in out_of_order
    assert _totals(warehouse)[0] == EXPECTED_COUNTS["raw"]


def test_rerunning_a_day_replaces_its_rows(
    warehouse: duckdb.DuckDBPyConnection, tmp_path: Path
) -> None:
    raw_dir = tmp_path / "raw" / "usage"
    for _ in range(3):
        ingest_usage_day(warehouse, raw_usage_dir=raw_dir, arrival_date=DAY_1)
        ingest_usage_day(warehouse, raw_usage_dir=raw_dir, arrival_date=DAY_2)
    assert _totals(warehouse) == (8, 4, 1, 3)
    accepted = warehouse.execute(
        "select customer_id, count(*) from ingest.accepted_usage_events group by 1 order by 1"
    ).fetchall()
    assert accepted == [(ALPHA, 2), (BETA, 2)]


def test_each_rule_names_its_reason(warehouse: duckdb.DuckDBPyConnection, tmp_path: Path) -> None:
    good = {
        "event_id": "evt_ok",
        "customer_id": ALPHA,
        "event_type": "model_call",
        "occurred_at": "2026-10-03T01:00:00Z",
        "received_at": "2026-10-03T01:00:01Z",
        "properties": {
            "model": "nimbus-large",
            "input_tokens": 1,
            "output_tokens": 1,
            "cache_read_tokens": 0,
            "request_kind": "chat",
        },
    }

    def variant(event_id: str, **changes: object) -> str:
        event = json.loads(json.dumps(good))
        event["event_id"] = event_id
        for key, value in changes.items():
            if key in event["properties"]:
                event["properties"][key] = value
            elif value is None:
                event.pop(key)
            else:
                event[key] = value
        return json.dumps(event)

    cases = {
        "evt_ok": (variant("evt_ok"), None),
        "evt_neg": (variant("evt_neg", input_tokens=-5), "negative_input_tokens"),
        "evt_str": (variant("evt_str", output_tokens="12"), "invalid_output_tokens_type"),
        "evt_float": (
            variant("evt_float", cache_read_tokens=1.5),
            "invalid_cache_read_tokens_type",
        ),
        "evt_huge": (variant("evt_huge", input_tokens=10**12), "input_tokens_too_large"),
        "evt_type": (variant("evt_type", event_type="page_view"), "unknown_event_type"),
        "evt_future": (
            variant("evt_future", occurred_at="2026-10-04T01:00:00Z"),
            "occurred_at_in_future",
        ),
        "evt_old": (variant("evt_old", occurred_at="2026-01-01T00:00:00Z"), "occurred_at_too_old"),
        "evt_tz": (
            variant("evt_tz", occurred_at="2026-10-03T00:59:00"),
            "occurred_at_without_time_zone",
        ),
        "evt_nocust": (variant("evt_nocust", customer_id=None), "missing_customer_id"),
        "evt_wrongday": (
            variant(
                "evt_wrongday",
                received_at="2026-09-01T00:00:00Z",
                occurred_at="2026-09-01T00:00:00Z",
            ),
            "received_at_outside_file_day",
        ),
    }
    lines = [line for line, _ in cases.values()] + ["[1, 2]", ""]
    folder = tmp_path / "raw" / "usage" / "date=2026-10-03" / "hour=01"
    folder.mkdir(parents=True)
    with gzip.open(folder / "part-0000.ndjson.gz", "wt") as handle:
        handle.write("\n".join(lines) + "\n")
    result = ingest_usage_day(
        warehouse, raw_usage_dir=tmp_path / "raw" / "usage", arrival_date=date(2026, 10, 3)
    )
    assert result.raw_lines == len(lines)
    assert result.accepted_lines == 1
    reasons = dict(
        warehouse.execute(
            "select coalesce(event_id, raw_line), reason from ingest.invalid_usage_lines"
        ).fetchall()
    )
    for event_id, (_, reason) in cases.items():
        if reason is not None:
            assert reasons[event_id] == reason, event_id
    assert reasons["[1, 2]"] == "not_a_json_object"
    assert result.quarantined_lines == len(lines) - 1


def test_an_unreadable_file_is_a_clear_error_and_writes_nothing(
    warehouse: duckdb.DuckDBPyConnection, tmp_path: Path
) -> None:
    folder = tmp_path / "raw" / "usage" / "date=2026-10-05" / "hour=00"
    folder.mkdir(parents=True)
    whole = gzip.compress("".join(f'{{"n": {n * 7919 % 10007}}}\n' for n in range(5000)).encode())
    (folder / "part-0000.ndjson.gz").write_bytes(whole[: len(whole) // 2])
    with pytest.raises(IngestionError, match="2026-10-05"):
        ingest_usage_day(
            warehouse, raw_usage_dir=tmp_path / "raw" / "usage", arrival_date=date(2026, 10, 5)
        )
    assert warehouse.execute("select count(*) from ingest.usage_files").fetchone() == (0,)


def _ingest_lines(
    conn: duckdb.DuckDBPyConnection, tmp_path: Path, body: bytes, *, day: date = date(2026, 10, 3)
) -> tuple[int, int, int, int]:
    """Write ``body`` (uncompressed) as the one hour file of ``day``; ingest it; the counts."""
    folder = tmp_path / "raw" / "usage" / f"date={day.isoformat()}" / "hour=01"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "part-0000.ndjson.gz").write_bytes(gzip.compress(body))
    result = ingest_usage_day(conn, raw_usage_dir=tmp_path / "raw" / "usage", arrival_date=day)
    return (
        result.raw_lines,
        result.accepted_lines,
        result.duplicate_lines,
        result.quarantined_lines,
    )


def _event_line(event_id: str, **changes: object) -> str:
    """A valid event of 3 October 2026 for ALPHA, with ``changes`` to its fields or tokens."""
    event: dict[str, object] = {
        "event_id": event_id,
        "customer_id": ALPHA,
        "event_type": "model_call",
        "occurred_at": "2026-10-03T01:00:00Z",
        "received_at": "2026-10-03T01:00:01Z",
    }
    properties: dict[str, object] = {
        "model": "nimbus-large",
        "input_tokens": 1,
        "output_tokens": 1,
        "cache_read_tokens": 0,
        "request_kind": "chat",
    }
    for key, value in changes.items():
        (properties if key in properties else event)[key] = value
    event["properties"] = properties
    return json.dumps(event)


def _reasons_by_line(conn: duckdb.DuckDBPyConnection) -> dict[int, str]:
    return dict(
        conn.execute("select line_number, reason from ingest.invalid_usage_lines").fetchall()
    )


def test_token_counts_beyond_signed_64_bits_are_too_large_not_a_failed_day(
    warehouse: duckdb.DuckDBPyConnection, tmp_path: Path
) -> None:
    # Regression: JSON typed 2**63 .. 2**64 - 1 as UBIGINT; no rule caught it and the cast to
    # BIGINT on insert failed the whole day.
    lines = [
        _event_line("evt_ok"),
        _event_line("evt_u63", input_tokens=2**63),
        _event_line("evt_u64", output_tokens=2**64 - 1),
    ]
    counts = _ingest_lines(warehouse, tmp_path, ("\n".join(lines) + "\n").encode())
    assert counts == (3, 1, 0, 2)
    assert _reasons_by_line(warehouse) == {
        2: "input_tokens_too_large",
        3: "output_tokens_too_large",
    }


def test_offsets_are_normalised_and_impossible_offsets_are_invalid(
    warehouse: duckdb.DuckDBPyConnection, tmp_path: Path
) -> None:
    # Regression: "+99:00" or "+24:00" matched the pattern and DuckDB applied them, so the
    # event was accepted and billed days away from when it happened; an offset in another
    # format ("+0200") was named occurred_at_without_time_zone although it has one.
    lines = [
        _event_line(
            "evt_kolkata",
            occurred_at="2026-10-03T06:30:00+05:30",
            received_at="2026-10-02T21:00:01-04:00",
        ),
        _event_line("evt_99", occurred_at="2026-10-03T03:00:00+99:00"),
        _event_line("evt_24", occurred_at="2026-10-03T03:00:00+24:00"),
        _event_line("evt_60", received_at="2026-10-03T03:00:01+02:60"),
        _event_line("evt_compact", occurred_at="2026-10-03T03:00:00+0200"),
        _event_line("evt_named", occurred_at="2026-10-03T01:00:00 UTC"),
        _event_line("evt_local", occurred_at="2026-10-03T00:59:00"),
        _event_line("evt_local_space", received_at="2026-10-03 01:00:01"),
    ]
    counts = _ingest_lines(warehouse, tmp_path, ("\n".join(lines) + "\n").encode())
    assert counts == (8, 1, 0, 7)
    assert warehouse.execute(
        "select cast(occurred_at as varchar), cast(received_at as varchar) "
        "from ingest.accepted_usage_events"
    ).fetchall() == [("2026-10-03 01:00:00", "2026-10-03 01:00:01")]
    assert _reasons_by_line(warehouse) == {
        2: "invalid_occurred_at",
        3: "invalid_occurred_at",
        4: "invalid_received_at",
        5: "invalid_occurred_at",
        6: "invalid_occurred_at",
        7: "occurred_at_without_time_zone",
        8: "received_at_without_time_zone",
    }


def test_a_line_duckdbs_reader_refuses_is_quarantined_not_a_failed_day(
    warehouse: duckdb.DuckDBPyConnection, tmp_path: Path
) -> None:
    # Regression: one byte that is not UTF-8, a carriage return, the record separator or a
    # line over 1 MiB made DuckDB's CSV reader refuse the whole file, and the day failed.
    lines = [
        _event_line("evt_ok").encode(),
        _event_line("evt_latin1", request_kind="caf\xe9")
        .replace("\\u00e9", "\xe9")
        .encode("latin-1"),
        b'{"event_id": "evt_bad\xff\xfe"}',
        _event_line("evt_rs", model="nimbus\x1elarge").replace("\\u001e", "\x1e").encode(),
        _event_line("evt_crlf").encode() + b"\r",
        _event_line("evt_huge", request_kind="x" * (2 * 1024 * 1024)).encode(),
        _event_line("evt_utf8", request_kind="\u00e9dition \u2713").encode(),
        b"",
    ]
    clean_day = date(2026, 10, 3)
    clean = tmp_path / "raw" / "usage" / "date=2026-10-03" / "hour=02" / "part-0000.ndjson.gz"
    clean.parent.mkdir(parents=True)
    clean.write_bytes(gzip.compress((_event_line("evt_clean") + "\n").encode()))
    counts = _ingest_lines(warehouse, tmp_path, b"\n".join(lines) + b"\n", day=clean_day)
    assert counts == (9, 4, 0, 5)
    quarantined = warehouse.execute(
        "select line_number, reason, raw_line from ingest.invalid_usage_lines order by 1"
    ).fetchall()
    assert [(number, reason) for number, reason, _ in quarantined] == [
        (2, "invalid_json"),
        (3, "invalid_json"),
        (4, "invalid_json"),
        (6, "line_too_long"),
        (8, "empty_line"),
    ]
    assert quarantined[1][2] == '{"event_id": "evt_bad\\xff\\xfe"}'
    accepted = warehouse.execute(
        "select event_id, request_kind from ingest.accepted_usage_events order by 1"
    ).fetchall()
    assert accepted == [
        ("evt_clean", "chat"),
        ("evt_crlf", "chat"),
        ("evt_ok", "chat"),
        ("evt_utf8", "\u00e9dition \u2713"),
    ]


def test_a_file_that_is_not_gzip_names_the_file(
    warehouse: duckdb.DuckDBPyConnection, tmp_path: Path
) -> None:
    folder = tmp_path / "raw" / "usage" / "date=2026-10-03" / "hour=01"
    folder.mkdir(parents=True)
    (folder / "part-0000.ndjson.gz").write_bytes(b"")
    with pytest.raises(IngestionError, match=r"hour=01/part-0000\.ndjson\.gz is not a gzip file"):
        ingest_usage_day(
            warehouse, raw_usage_dir=tmp_path / "raw" / "usage", arrival_date=date(2026, 10, 3)
        )
    assert warehouse.execute("select count(*) from ingest.usage_files").fetchone() == (0,)


def test_blank_lines_of_any_whitespace_are_empty_lines(
    warehouse: duckdb.DuckDBPyConnection, tmp_path: Path
) -> None:
    # Regression: only spaces counted as blank, so the blank line of a CRLF file ("\r") or a
    # line of tabs was quarantined as invalid_json, and an object after a tab as not an object.
    lines = [
        _event_line("evt_ok") + "\r",
        "\r",
        "\t \t",
        "  ",
        "\t" + _event_line("evt_tab"),
    ]
    counts = _ingest_lines(warehouse, tmp_path, ("\r\n".join(lines) + "\r\n").encode())
    assert counts == (5, 2, 0, 3)
    assert _reasons_by_line(warehouse) == {2: "empty_line", 3: "empty_line", 4: "empty_line"}


def test_an_empty_file_is_recorded_with_no_lines(
    warehouse: duckdb.DuckDBPyConnection, tmp_path: Path
) -> None:
    # Regression: usage_files was built from the lines read, so a gzip file with no lines (an
    # hour without traffic) was missing from usage_files and usage_file_counts.
    empty = tmp_path / "raw" / "usage" / "date=2026-10-03" / "hour=00" / "part-0000.ndjson.gz"
    empty.parent.mkdir(parents=True)
    empty.write_bytes(gzip.compress(b""))
    counts = _ingest_lines(warehouse, tmp_path, (_event_line("evt_ok") + "\n").encode())
    assert counts == (1, 1, 0, 0)
    assert warehouse.execute(
        "select source_file, raw_lines, accepted_lines, duplicate_lines, quarantined_lines "
        "from ingest.usage_file_counts order by 1"
    ).fetchall() == [
        ("date=2026-10-03/hour=00/part-0000.ndjson.gz", 0, 0, 0, 0),
        ("date=2026-10-03/hour=01/part-0000.ndjson.gz", 1, 1, 0, 0),
    ]
    assert warehouse.execute(
        "select file_bytes from ingest.usage_files where raw_lines = 0"
    ).fetchall() == [(empty.stat().st_size,)]


def test_a_corrupt_file_that_reads_without_error_is_refused(
    warehouse: duckdb.DuckDBPyConnection, tmp_path: Path
) -> None:
    # Regression: DuckDB does not check the gzip CRC and the old check only decompressed a
    # file whose lines did not add up to the size in its trailer, so a corrupted byte that kept
    # the size (here a token count, 1000 -> 9000) was ingested and billed without an error.
    body = (_event_line("evt_ok", input_tokens=1000) + "\n").encode()
    stored = gzip.compress(body, compresslevel=0)  # stored blocks: the bytes appear as they are
    corrupt = stored.replace(b'"input_tokens": 1000', b'"input_tokens": 9000')
    assert corrupt != stored
    folder = tmp_path / "raw" / "usage" / "date=2026-10-03" / "hour=01"
    folder.mkdir(parents=True)
    (folder / "part-0000.ndjson.gz").write_bytes(corrupt)
    with pytest.raises(IngestionError, match=r"part-0000\.ndjson\.gz is truncated or corrupt"):
        ingest_usage_day(
            warehouse, raw_usage_dir=tmp_path / "raw" / "usage", arrival_date=date(2026, 10, 3)
        )
    assert warehouse.execute("select count(*) from ingest.usage_event_lines").fetchone() == (0,)


def test_a_null_event_type_is_unknown_not_a_failed_day(
    warehouse: duckdb.DuckDBPyConnection, tmp_path: Path
) -> None:
    # Regression: JSON null extracts as SQL NULL, "NULL not in (...)" is not true, so the line
    # passed every rule and its insert broke the NOT NULL constraint: the whole day failed.
    lines = [_event_line("evt_ok"), _event_line("evt_null_type", event_type=None)]
    counts = _ingest_lines(warehouse, tmp_path, ("\n".join(lines) + "\n").encode())
    assert counts == (2, 1, 0, 1)
    assert _reasons_by_line(warehouse) == {2: "unknown_event_type"}


def _tool_call_line(event_id: str, **properties: object) -> str:
    """A valid tool call of 3 October 2026 for ALPHA; ``properties`` replace its own."""
    event = json.loads(_event_line(event_id, event_type="tool_call"))
    event["properties"] = {"tool": "web_search", "cost_minor": 3} | properties
    event["properties"] = {k: v for k, v in event["properties"].items() if v is not None}
    return json.dumps(event)


def test_a_tool_call_needs_its_tool_and_cost_but_no_model_or_tokens(
    warehouse: duckdb.DuckDBPyConnection, tmp_path: Path
) -> None:
    lines = [
        _tool_call_line("evt_tool"),
        _tool_call_line("evt_notool", tool=None),
        _tool_call_line("evt_emptytool", tool=""),
        _tool_call_line("evt_numtool", tool=5),
        _tool_call_line("evt_nocost", cost_minor=None),
        _tool_call_line("evt_strcost", cost_minor="3"),
        _tool_call_line("evt_fraccost", cost_minor=2.5),
        _tool_call_line("evt_negcost", cost_minor=-1),
        _tool_call_line("evt_hugecost", cost_minor=10**12),
        # A model call still needs its model and tokens; a tool call's fields do not count.
        _event_line("evt_model_without_tokens", input_tokens=None, tool="web_search"),
        # The same id as a tool call and as a model call: a conflict, not a retry.
        _event_line("evt_tool"),
    ]
    counts = _ingest_lines(warehouse, tmp_path, ("\n".join(lines) + "\n").encode())
    assert counts == (11, 1, 0, 10)
    assert _reasons_by_line(warehouse) == {
        2: "missing_tool",
        3: "missing_tool",
        4: "invalid_tool",
        5: "missing_cost_minor",
        6: "invalid_cost_minor_type",
        7: "invalid_cost_minor_type",
        8: "negative_cost_minor",
        9: "cost_minor_too_large",
        10: "invalid_input_tokens_type",
    }
    assert warehouse.execute(
        "select event_id, event_type, model, request_kind, tool, cost_minor, input_tokens, "
        "output_tokens, cache_read_tokens, status from ingest.usage_event_lines order by 1, status"
    ).fetchall() == [
        ("evt_tool", "tool_call", None, None, "web_search", 3, 0, 0, 0, "accepted"),
        ("evt_tool", "model_call", "nimbus-large", "chat", None, 0, 1, 1, 0, "conflict"),
    ]
