"""The sample data generator: deterministic, in the contract, with exactly the mess it claims."""

from __future__ import annotations

import csv
import gzip
import hashlib
import json
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path

import duckdb
import pytest

from ingestion.sample_data import GenerationSummary, generate_sample_data
from ingestion.stripe_exports import STRIPE_EXPORT_TABLES, load_stripe_exports
from ingestion.usage_events import ingest_usage_day
from orchestration.settings import DBT_PROJECT_DIR

START = date(2026, 10, 1)
DAYS = 3


def _generate(folder: Path, seed: int = 11) -> GenerationSummary:
    return generate_sample_data(
        folder,
        start_date=START,
        days=DAYS,
        customers=12,
        events_per_day=4_000,
        seed=seed,
        price_book_dir=DBT_PROJECT_DIR / "seeds",
    )


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, GenerationSummary]:
    folder = tmp_path_factory.mktemp("sample")
    return folder, _generate(folder)


def _digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_same_arguments_give_the_same_bytes(
    generated: tuple[Path, GenerationSummary], tmp_path: Path
) -> None:
    folder, _ = generated
    _generate(tmp_path)
    assert _digest(tmp_path) == _digest(folder)
    other = tmp_path / "other"
    _generate(other, seed=12)
    assert _digest(other) != _digest(folder)


def test_files_are_by_arrival_hour_and_lines_follow_the_contract(
    generated: tuple[Path, GenerationSummary],
) -> None:
    folder, _ = generated
    files = sorted((folder / "raw" / "usage").glob("date=*/hour=*/*.ndjson.gz"))
    assert {f.parent.parent.name for f in files} == {
        f"date={START + timedelta(days=d)}" for d in range(DAYS)
    }
    well_formed = 0
    for path in files:
        day, hour = path.parent.parent.name[5:], path.parent.name[5:]
        with gzip.open(path, "rt") as handle:
            lines = handle.read().splitlines()
        for line in lines:
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                continue
            if not isinstance(event.get("event_id"), str):
                continue
            assert event["received_at"].startswith(f"{day}T{hour}:")
            assert event["received_at"].endswith("Z") and len(event["received_at"]) == 24
            assert set(event) == {
                "event_id",
                "customer_id",
                "event_type",
                "occurred_at",
                "received_at",
                "properties",
            }
            assert set(event["properties"]) == {
                "model",
                "input_tokens",
                "output_tokens",
                "cache_read_tokens",
                "request_kind",
            }
            well_formed += 1
    assert well_formed > DAYS * 4_000


def test_ingestion_finds_exactly_the_mess_that_was_made(
    generated: tuple[Path, GenerationSummary], tmp_path: Path
) -> None:
    folder, summary = generated
    with duckdb.connect(str(tmp_path / "w.duckdb")) as conn:
        load_stripe_exports(conn, stripe_dir=folder / "raw" / "stripe")
        for offset in range(DAYS):
            ingest_usage_day(
                conn,
                raw_usage_dir=folder / "raw" / "usage",
                arrival_date=START + timedelta(days=offset),
            )
        found = {
            str(day): (raw, accepted, duplicates, quarantined)
            for day, raw, accepted, duplicates, quarantined in conn.execute(
                "select arrival_date, sum(raw_lines), sum(accepted_lines), "
                "sum(duplicate_lines), sum(quarantined_lines) "
                "from ingest.usage_file_counts group by 1"
            ).fetchall()
        }
    for day, expected in summary.per_day.items():
        assert expected["raw_lines"] == (
            expected["valid_events"]
            + expected["identical_retries"]  # type: ignore[operator]
            + expected["conflicting_duplicates"]
            + expected["malformed_lines"]
            + expected["unknown_customer_lines"]
        )
        assert found[day] == (
            expected["raw_lines"],
            expected["expected_accepted"],
            expected["expected_duplicates"],
            expected["expected_quarantined"],
        ), day
    assert summary.totals["identical_retries"] > 0
    assert summary.totals["conflicting_duplicates"] > 0
    assert summary.totals["malformed_lines"] > 0


def test_stripe_exports_match_the_price_book(generated: tuple[Path, GenerationSummary]) -> None:
    folder, _ = generated
    stripe_dir = folder / "raw" / "stripe"
    tables = {
        name: list(csv.DictReader((stripe_dir / f"{name}.csv").read_text().splitlines()))
        for name in STRIPE_EXPORT_TABLES
    }
    for name, columns in STRIPE_EXPORT_TABLES.items():
        assert tuple(tables[name][0]) == columns
    prices = {p["lookup_key"]: p for p in tables["prices"]}
    book = csv.DictReader(
        (DBT_PROJECT_DIR / "seeds" / "price_book_meter_prices.csv").read_text().splitlines()
    )
    for row in book:
        price = prices[f"{row['plan_id']}:{row['meter_id']}"]
        assert Decimal(price["unit_amount_decimal"]) == Decimal(row["unit_price_minor"])
        assert price["recurring_usage_type"] == "metered"
    customers = {c["id"] for c in tables["customers"]}
    assert {s["customer"] for s in tables["subscriptions"]} == customers
    assert all(json.loads(s["metadata"])["plan_id"] for s in tables["subscriptions"])
