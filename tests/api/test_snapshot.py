"""The published warehouse snapshot: atomic publication, pruning, and the reads that need it
(GET /anomalies; GET /customers/{id} without one), on a small warehouse written here."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from datetime import date
from pathlib import Path

import duckdb

from api import views
from api.snapshot import CURRENT, KEEP_SNAPSHOTS, open_snapshot, publish_snapshot
from orchestration.quality.anomalies import FINDINGS_SCHEMA_SQL
from tests.api.conftest import ApiServer


def small_warehouse(path: Path) -> duckdb.DuckDBPyConnection:
    conn = duckdb.connect(str(path))
    conn.execute(FINDINGS_SCHEMA_SQL)
    conn.execute(
        "insert into quality.anomaly_findings values "
        "('2026-10-01', 'usage_spike', 'cus_alpha', 'm1', '10', '1', '5', 'older', "
        "'2026-10-02 01:00:00+00'), "
        "('2026-10-03', 'usage_spike', 'cus_alpha', 'm1', '12', '1', '5', 'newer', "
        "'2026-10-04 01:00:00+00')"
    )
    conn.execute(
        "create table reconciliation_discrepancies as select 'cus_alpha' as customer_id, "
        "date '2026-10-01' as billing_period_start_date, 'm1' as meter_id, "
        "cast(1.5 as decimal(38, 12)) as stripe_difference_minor"
    )
    return conn


def test_publication_is_atomic_and_old_snapshots_are_pruned(tmp_path: Path) -> None:
    root = tmp_path / "snapshots"
    with small_warehouse(tmp_path / "w.duckdb") as conn:
        published = [publish_snapshot(conn, root) for _ in range(KEEP_SNAPSHOTS + 2)]
    assert (root / CURRENT).read_text() == published[-1].path.name
    kept = sorted(p.name for p in root.iterdir() if p.is_dir())
    assert kept == [p.path.name for p in published[-KEEP_SNAPSHOTS:]]
    assert not [p for p in root.iterdir() if p.name.startswith(".")]  # no partial leftovers
    assert published[-1].rows == {"anomaly_findings": 2, "reconciliation_discrepancies": 1}
    assert "billable_usage_daily" in published[-1].missing
    with open_snapshot(root) as snapshot:
        assert snapshot.published_at == published[-1].published_at


def test_anomalies_newest_first_and_reads_without_a_snapshot(
    tmp_path: Path, start_api: Callable[..., ApiServer]
) -> None:
    root = tmp_path / "snapshots"
    api = start_api(snapshot_dir=root)
    with api.client("viewer") as client:
        unavailable = client.get("/anomalies")
        assert (unavailable.status_code, unavailable.json()["error"]["code"]) == (
            503,
            "snapshot_unavailable",
        )
        state = client.get("/customers/cus_alpha")
        assert state.status_code == 200
        assert state.json()["warehouse"]["available"] is False
        assert state.json()["ledger"]["balances"] == []
        with small_warehouse(tmp_path / "w.duckdb") as conn:
            publish_snapshot(conn, root)
        every = client.get("/anomalies").json()
        assert [f["message"] for f in every["anomalies"]] == ["newer", "older"]
        assert every["reconciliation_discrepancies"][0]["stripe_difference_minor"] == "1.5"
        assert every["as_of"]
        recent = client.get("/anomalies", params={"since": "2026-10-02"}).json()
        assert [f["message"] for f in recent["anomalies"]] == ["newer"]
        later = client.get("/anomalies", params={"since": "2026-12-01"}).json()
        assert later["anomalies"] == later["reconciliation_discrepancies"] == []
        incomplete = client.get("/explain", params={"event_id": "evt_1"})
        assert (incomplete.status_code, incomplete.json()["error"]["code"]) == (
            503,
            "snapshot_incomplete",
        )
        bad = client.get("/anomalies", params={"since": "yesterday"})
        assert (bad.status_code, bad.json()["error"]["code"]) == (422, "invalid_request")


def test_meterbook_api_publish_then_explain_an_event(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    with duckdb.connect(str(data_dir / "warehouse.duckdb")) as conn:
        conn.execute("create schema ingest")
        conn.execute(
            "create table ingest.usage_event_lines as select 'evt_1' as event_id, "
            "'cus_alpha' as customer_id, 'model_call' as event_type, 'nimbus-small' as model, "
            "date '2026-10-01' as usage_date, timestamp '2026-10-01 10:00' as occurred_at, "
            "timestamp '2026-10-01 10:00:01' as received_at, date '2026-10-01' as arrival_date, "
            "'hour=10/a.ndjson.gz' as source_file, 1 as line_number, 'agent' as request_kind, "
            "5 as input_tokens, "
            "1 as output_tokens, 0 as cache_read_tokens, null as tool, 0 as cost_minor, "
            "'h' as content_hash, 'accepted' as status"
        )
        conn.execute(
            "create table ingest.invalid_usage_lines as select 'hour=10/a.ndjson.gz' as "
            "source_file, 2 as line_number, date '2026-10-01' as arrival_date, 'evt_2' as "
            "event_id, 'unknown_customer' as reason"
        )
        conn.execute(
            "create view ingest.quarantined_usage_lines as select * from ingest.invalid_usage_lines"
        )
        conn.execute(
            "create table price_book_meters as select 'nimbus_small__requests' as meter_id, "
            "'model_call' as event_type, 'nimbus-small' as model, null as property_filters, "
            "'count' as aggregation, null as quantity_property"
        )
    env = {k: v for k, v in os.environ.items() if k != "METERBOOK_WAREHOUSE_PATH"}
    env |= {"METERBOOK_DATA_DIR": str(data_dir)}
    meterbook = [sys.executable, "-c", "from orchestration.cli import app; app()"]
    published = subprocess.run(
        [*meterbook, "api", "publish"], env=env, capture_output=True, text=True, timeout=120
    )
    assert published.returncode == 0, published.stderr
    assert "usage_event_lines 1" in published.stdout
    command = [*meterbook, "explain"]
    billed = subprocess.run(
        [*command, "--event-id", "evt_1"], env=env, capture_output=True, text=True, timeout=120
    )
    assert billed.returncode == 0, billed.stderr
    line = json.loads(billed.stdout)["lines"][0]
    assert line["outcome"] == "billed"
    assert line["slots"] == [
        {
            "metric": "nimbus_small__requests",
            "ledger_slot": "cus_alpha:nimbus_small__requests:2026-10-01",
        }
    ]
    quarantined = subprocess.run(
        [*command, "--event-id", "evt_2"], env=env, capture_output=True, text=True, timeout=120
    )
    assert json.loads(quarantined.stdout)["lines"][0]["reason"] == "unknown_customer"
    unknown = subprocess.run(
        [*command, "--event-id", "evt_9"], env=env, capture_output=True, text=True, timeout=120
    )
    assert unknown.returncode == 1
    assert "evt_9" in unknown.stderr


def usage_event_lines(conn: duckdb.DuckDBPyConnection, days: int) -> None:
    conn.execute("create schema if not exists ingest")
    conn.execute(
        "create or replace table ingest.usage_event_lines as "
        "with lines as (select n, date '2026-10-01' + cast(n % ? as integer) as d "
        "from range(?) r(n)) "
        "select 'evt_' || n as event_id, 'cus_alpha' as customer_id, "
        "'model_call' as event_type, 'nimbus-small' as model, d as usage_date, "
        "cast(d as timestamp) as occurred_at, cast(d as timestamp) as received_at, "
        "d as arrival_date, 'f.ndjson.gz' as source_file, n as line_number, "
        "'agent' as request_kind, 5 as input_tokens, "
        "1 as output_tokens, 0 as cache_read_tokens, null as tool, 0 as cost_minor, "
        "'h' as content_hash, 'accepted' as status from lines",
        [max(days, 1), days * 3],
    )


def test_unchanged_days_of_event_lines_are_linked_not_written_again(tmp_path: Path) -> None:
    """A daily run publishes the event lines of the days that changed; the others are the same
    files as in the last snapshot (hard links), and a reader sees every day either way."""
    root = tmp_path / "snapshots"
    with small_warehouse(tmp_path / "w.duckdb") as conn:
        usage_event_lines(conn, days=0)
        empty = publish_snapshot(conn, root)
        assert empty.rows["usage_event_lines"] == 0
        with open_snapshot(root) as snapshot:
            assert snapshot.rows("select count(*) as n from usage_event_lines") == [{"n": 0}]
        usage_event_lines(conn, days=2)
        first = publish_snapshot(conn, root)
        conn.execute(
            "update ingest.usage_event_lines set status = 'duplicate' "
            "where arrival_date = date '2026-10-02' and line_number = 1"
        )
        second = publish_snapshot(conn, root)

    def inode(published: object, day: str) -> int:
        return (published.path / "usage_event_lines" / f"{day}.parquet").stat().st_ino  # type: ignore[attr-defined]

    assert first.rows["usage_event_lines"] == second.rows["usage_event_lines"] == 6
    assert inode(first, "2026-10-01") == inode(second, "2026-10-01")  # unchanged: linked
    assert inode(first, "2026-10-02") != inode(second, "2026-10-02")  # changed: written
    with open_snapshot(root) as snapshot:
        statuses = snapshot.rows(
            "select arrival_date, status, count(*) as n from usage_event_lines "
            "group by all order by all"
        )
    assert [(str(r["arrival_date"]), r["status"], r["n"]) for r in statuses] == [
        ("2026-10-01", "accepted", 3),
        ("2026-10-02", "accepted", 2),
        ("2026-10-02", "duplicate", 1),
    ]


def test_anomalies_since_keeps_the_periods_that_end_after_it_by_each_customers_cycle(
    tmp_path: Path,
) -> None:
    """Anchored on the 31st, the period beginning 28 February 2027 ends on 31 March: it is still
    open on 29 March (a month after its start would say it ended on the 28th)."""
    root = tmp_path / "snapshots"
    with small_warehouse(tmp_path / "w.duckdb") as conn:
        conn.execute(
            "create table int_customer_billing_cycles as select 'cus_31st' as customer_id, "
            "31 as billing_anchor_day, 1 as anchor_day_count"
        )
        conn.execute(
            "insert into reconciliation_discrepancies values "
            "('cus_31st', '2027-02-28', 'm1', 2), ('cus_calendar', '2027-02-01', 'm1', 3)"
        )
        publish_snapshot(conn, root)
    with open_snapshot(root) as snapshot:
        open_on_29_march = views.anomalies(snapshot, date(2027, 3, 29), limit=10)
        after_its_end = views.anomalies(snapshot, date(2027, 3, 31), limit=10)
        everything = views.anomalies(snapshot, None, limit=2)
    assert [r["customer_id"] for r in open_on_29_march["reconciliation_discrepancies"]] == [
        "cus_31st"
    ]
    assert after_its_end["reconciliation_discrepancies"] == []
    assert len(everything["reconciliation_discrepancies"]) == 2
