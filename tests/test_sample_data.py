"""The sample data generator: deterministic, in the contract, with exactly the mess it claims.

The checks re-derive everything from the written files (not from the generator's internals): each
line is classified as the ingestion contract would, copies of an ``event_id`` are compared with
their first copy, and the counts must equal the manifest's, per arrival day.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import json
import re
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pytest

from ingestion.sample_data import (
    TOOLS,
    GenerationSummary,
    MessRates,
    generate_sample_data,
    read_manifest,
)
from ingestion.stripe_exports import (
    STRIPE_EXPORT_TABLES,
    STRIPE_OPTIONAL_COLUMNS,
    STRIPE_PRICE_EXTRA_COLUMNS,
    load_stripe_exports,
)
from ingestion.usage_events import ingest_usage_day
from orchestration.settings import DBT_PROJECT_DIR
from pricing.periods import billing_period_of
from pricing.price_book import load_price_book
from pricing.stripe_prices import stripe_price_fields

START = date(2026, 10, 1)
DAYS = 3
CUSTOMERS = 12
EVENTS_PER_DAY = 4_000
SEEDS_DIR = DBT_PROJECT_DIR / "seeds"
# Higher than the defaults, so that a small sample holds every kind of mess.
RICH_MESS = MessRates(retry=0.05, conflict=0.01, late=0.1, malformed=0.02, unknown_customer=0.005)
EVENT_KEYS = ["event_id", "customer_id", "event_type", "occurred_at", "received_at", "properties"]
PROPERTY_KEYS = ["model", "input_tokens", "output_tokens", "cache_read_tokens", "request_kind"]
TOKEN_KEYS = PROPERTY_KEYS[1:4]
TOOL_PROPERTY_KEYS = ["tool", "cost_minor"]
REQUEST_KINDS = {"agent", "chat", "completion", "edit"}
TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
STRIPE_ID = re.compile(r"^(cus|prod|price|sub|si)_[A-Za-z0-9]{14}$")
HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS


def _generate(
    folder: Path, seed: int = 11, mess: MessRates | None = RICH_MESS
) -> GenerationSummary:
    return generate_sample_data(
        folder,
        start_date=START,
        days=DAYS,
        customers=CUSTOMERS,
        events_per_day=EVENTS_PER_DAY,
        seed=seed,
        price_book_dir=SEEDS_DIR,
        mess=mess,
    )


def _ms(timestamp: str) -> int:
    moment = datetime.strptime(timestamp, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000 + 0.5)


def _read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


@dataclass
class Line:
    day: str
    hour: str
    text: str
    event: dict[str, Any] | None
    kind: str  # "well_formed" or the malformed kind the test recognises


@dataclass
class Observed:
    """What the files hold, counted per arrival day by the test itself."""

    lines: list[Line] = field(default_factory=list)
    per_day: dict[str, Counter[str]] = field(default_factory=lambda: defaultdict(Counter))


def _classify(event: Any) -> str:
    """The first contract rule a parsed line breaks (``well_formed`` when none)."""
    if not isinstance(event, dict):
        return "invalid_json"
    if not isinstance(event.get("event_id"), str):
        return "missing_event_id"
    if not isinstance(event.get("customer_id"), str):
        return "missing_customer_id"
    if event.get("event_type") == "tool_call":
        return "well_formed"  # the generator breaks only model calls
    if event.get("event_type") != "model_call":
        return "unknown_event_type"
    properties = event["properties"]
    if any(not isinstance(properties[k], int) for k in TOKEN_KEYS):
        return "token_count_as_string"
    if any(properties[k] < 0 for k in TOKEN_KEYS):
        return "negative_token_count"
    if _ms(event["occurred_at"]) > _ms(event["received_at"]) + 5 * 60_000:
        return "occurred_at_in_future"
    return "well_formed"


def _observe(folder: Path) -> Observed:
    observed = Observed()
    for path in sorted((folder / "raw" / "usage").glob("date=*/hour=*/*.ndjson.gz")):
        day, hour = path.parent.parent.name[len("date=") :], path.parent.name[len("hour=") :]
        with gzip.open(path, "rt", encoding="utf-8") as handle:
            texts = handle.read().split("\n")
        assert texts[-1] == "", f"{path} must end with a newline"
        for text in texts[:-1]:
            try:
                event = json.loads(text)
            except json.JSONDecodeError:
                event = None
            line = Line(day, hour, text, event, _classify(event))
            observed.lines.append(line)
            observed.per_day[day]["raw_lines"] += 1
    return observed


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, GenerationSummary]:
    folder = tmp_path_factory.mktemp("sample")
    return folder, _generate(folder)


@pytest.fixture(scope="module")
def observed(generated: tuple[Path, GenerationSummary]) -> Observed:
    return _observe(generated[0])


@pytest.fixture(scope="module")
def stripe(generated: tuple[Path, GenerationSummary]) -> dict[str, list[dict[str, str]]]:
    stripe_dir = generated[0] / "raw" / "stripe"
    return {name: _read_csv(stripe_dir / f"{name}.csv") for name in STRIPE_EXPORT_TABLES}


def _digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_same_arguments_give_the_same_bytes(
    generated: tuple[Path, GenerationSummary], tmp_path: Path
) -> None:
    folder, summary = generated
    again = _generate(tmp_path / "again")
    assert _digest(tmp_path / "again") == _digest(folder)
    assert again == summary == read_manifest(folder)
    _generate(tmp_path / "other", seed=12)
    assert _digest(tmp_path / "other") != _digest(folder)


def test_default_rates_are_the_documented_ones() -> None:
    rates = MessRates()
    assert (rates.retry, rates.conflict, rates.late, rates.malformed, rates.unknown_customer) == (
        0.01,
        0.001,
        0.03,
        0.003,
        0.001,
    )
    with pytest.raises(ValueError):
        MessRates(retry=1.5)


def test_files_are_by_arrival_hour_within_the_generated_days(
    generated: tuple[Path, GenerationSummary], observed: Observed
) -> None:
    folder, summary = generated
    days = {(START + timedelta(days=d)).isoformat() for d in range(DAYS)}
    files = sorted((folder / "raw" / "usage").rglob("*"))
    assert {p.name for p in files if p.is_file()} == {"part-0000.ndjson.gz"}
    assert {p.name for p in (folder / "raw" / "usage").iterdir()} == {f"date={d}" for d in days}
    for line in observed.lines:
        if line.event is not None and isinstance(line.event.get("received_at"), str):
            assert line.event["received_at"].startswith(f"{line.day}T{line.hour}:"), line.text
    hours_per_day = Counter(p.parent.parent.name for p in files if p.is_file())
    assert hours_per_day == {f"date={d}": 24 for d in days}
    assert sum(e["files"] for e in summary.per_day.values()) == 24 * DAYS
    for path in files:
        if path.is_file():
            assert path.read_bytes()[4:8] == b"\0\0\0\0", "gzip mtime must be 0"


def test_every_well_formed_line_follows_the_contract(
    generated: tuple[Path, GenerationSummary],
    observed: Observed,
    stripe: dict[str, list[dict[str, str]]],
) -> None:
    _, summary = generated
    meters = _read_csv(SEEDS_DIR / "price_book_meters.csv")
    models = {m["model"] for m in meters}
    customers = {c["id"] for c in stripe["customers"]}
    unknown = set(summary.unknown_customer_ids)
    assert unknown and not unknown & customers
    well_formed = [line for line in observed.lines if line.kind == "well_formed"]
    assert len(well_formed) > DAYS * EVENTS_PER_DAY
    for line in well_formed:
        event = line.event
        assert event is not None
        assert list(event) == EVENT_KEYS, line.text
        assert json.dumps(event) == line.text  # one canonical spelling
        assert event["event_id"].startswith("evt_")
        assert event["customer_id"] in customers | unknown
        assert TIMESTAMP.match(event["occurred_at"]) and TIMESTAMP.match(event["received_at"])
        properties = event["properties"]
        lag = _ms(event["received_at"]) - _ms(event["occurred_at"])
        assert 50 <= lag <= 30 * DAY_MS, line.text
        if event["event_type"] == "tool_call":
            assert list(properties) == TOOL_PROPERTY_KEYS, line.text
            assert properties["tool"] in TOOLS
            assert type(properties["cost_minor"]) is int and properties["cost_minor"] >= 1
            continue
        assert event["event_type"] == "model_call"
        assert list(properties) == PROPERTY_KEYS, line.text
        assert properties["model"] in models
        assert properties["request_kind"] in REQUEST_KINDS
        for key in TOKEN_KEYS:
            assert type(properties[key]) is int and 0 <= properties[key] < 100_000_000


def test_data_looks_like_real_usage(observed: Observed) -> None:
    all_events = [line.event for line in observed.lines if line.kind == "well_formed"]
    events = [e for e in all_events if e and e["event_type"] == "model_call"]
    tool_calls = [e for e in all_events if e and e["event_type"] == "tool_call"]
    assert 0.01 < len(tool_calls) / len(all_events) < 0.03, "about 2 % are paid tool calls"
    assert {e["properties"]["tool"] for e in tool_calls} == set(TOOLS)
    models = Counter(e["properties"]["model"] for e in events)
    kinds = Counter(e["properties"]["request_kind"] for e in events)
    volumes = Counter(e["customer_id"] for e in events)
    assert len(models) == 3 and len(set(models.values())) == 3
    assert set(kinds) == REQUEST_KINDS
    assert max(volumes.values()) > 5 * min(volumes.values())
    inputs = sorted(e["properties"]["input_tokens"] for e in events)
    assert inputs[-1] > 10 * inputs[len(inputs) // 2], "token counts should be heavy-tailed"
    lags = sorted(_ms(e["received_at"]) - _ms(e["occurred_at"]) for e in events)
    assert 50 <= lags[len(lags) // 2] <= 3_000


def test_the_mess_is_exactly_what_the_manifest_says(
    generated: tuple[Path, GenerationSummary],
    observed: Observed,
    stripe: dict[str, list[dict[str, str]]],
) -> None:
    _, summary = generated
    customers = {c["id"] for c in stripe["customers"]}
    counts: dict[str, Counter[str]] = defaultdict(Counter)
    first: dict[str, Line] = {}
    copies: list[Line] = []
    for line in sorted(
        (x for x in observed.lines if x.kind == "well_formed"),
        key=lambda x: _ms(x.event["received_at"]),  # type: ignore[index]
    ):
        assert line.event is not None
        if line.event["event_id"] in first:
            copies.append(line)
        else:
            first[line.event["event_id"]] = line
    for line in first.values():
        assert line.event is not None
        if line.event["customer_id"] in customers:
            counts[line.day]["valid_events"] += 1
            lag = _ms(line.event["received_at"]) - _ms(line.event["occurred_at"])
            if lag > 3_000:
                assert HOUR_MS <= lag <= 3 * DAY_MS
                counts[line.day]["late_events"] += 1
            if line.event["occurred_at"][:10] < line.day:
                counts[line.day]["earlier_day_events"] += 1
        else:
            counts[line.day]["unknown_customer_lines"] += 1
    for copy in copies:
        assert copy.event is not None
        original = first[copy.event["event_id"]].event
        assert original is not None
        assert original["customer_id"] in customers, "copies are of valid, accepted events"
        assert _ms(copy.event["received_at"]) > _ms(original["received_at"])
        same = {**copy.event, "received_at": original["received_at"]}
        if same == original:
            counts[copy.day]["identical_retries"] += 1
        else:
            changed = "cost_minor" if original["event_type"] == "tool_call" else "output_tokens"
            same["properties"] = {**same["properties"], changed: None}
            assert same == {
                **original,
                "properties": {**original["properties"], changed: None},
            }, f"a conflicting duplicate differs in {changed} only"
            counts[copy.day]["conflicting_duplicates"] += 1
    for line in observed.lines:
        if line.kind != "well_formed":
            counts[line.day][line.kind] += 1

    for day, expected in summary.per_day.items():
        by_kind = expected["malformed_by_kind"]
        assert (
            expected["raw_lines"]
            == observed.per_day[day]["raw_lines"]
            == (
                expected["valid_events"]
                + expected["identical_retries"]
                + expected["conflicting_duplicates"]
                + expected["malformed_lines"]
                + expected["unknown_customer_lines"]
            )
        )
        assert expected["malformed_lines"] == sum(by_kind.values())
        found = counts[day]
        for key in (
            "valid_events",
            "identical_retries",
            "conflicting_duplicates",
            "unknown_customer_lines",
            "late_events",
            "earlier_day_events",
        ):
            assert found[key] == expected[key], (day, key)
        # A truncated line is invalid JSON too: the test cannot tell the two apart.
        assert found["invalid_json"] == by_kind["invalid_json"] + by_kind["truncated_line"]
        for kind in set(by_kind) - {"invalid_json", "truncated_line"}:
            assert found[kind] == by_kind[kind], (day, kind)
    for key, total in summary.totals.items():
        if isinstance(total, dict):
            for kind, number in total.items():
                assert number == sum(d[key][kind] for d in summary.per_day.values())
        else:
            assert total == sum(d[key] for d in summary.per_day.values())
    totals = summary.totals
    for key in ("identical_retries", "conflicting_duplicates", "unknown_customer_lines"):
        assert totals[key] > 0, key
    assert all(number > 0 for number in totals["malformed_by_kind"].values())
    # Copies land in the same hour file, later hour files and the next day's files.
    places = set()
    for copy in copies:
        assert copy.event is not None
        original_line = first[copy.event["event_id"]]
        if copy.day > original_line.day:
            places.add("next_day")
        else:
            places.add("same_hour" if copy.hour == original_line.hour else "later_hour")
    assert places == {"same_hour", "later_hour", "next_day"}


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
        assert found[day] == (
            expected["raw_lines"],
            expected["expected_accepted"],
            expected["expected_duplicates"],
            expected["expected_quarantined"],
        ), day


def test_default_mess_is_small(tmp_path: Path) -> None:
    summary = _generate(tmp_path, mess=None)
    assert summary.mess == asdict(MessRates())
    totals = summary.totals
    assert totals["valid_events"] > 0.95 * totals["raw_lines"]


def test_stripe_exports_match_the_price_book(
    generated: tuple[Path, GenerationSummary], stripe: dict[str, list[dict[str, str]]]
) -> None:
    folder, summary = generated
    stripe_dir = folder / "raw" / "stripe"
    for name, columns in STRIPE_EXPORT_TABLES.items():
        header = (stripe_dir / f"{name}.csv").read_text().splitlines()[0]
        extra = STRIPE_OPTIONAL_COLUMNS.get(name, ()) + (
            STRIPE_PRICE_EXTRA_COLUMNS if name == "prices" else ()
        )
        assert header == ",".join(columns + extra), name
        for row in stripe[name]:
            assert STRIPE_ID.match(row["id"]), row
            assert row["created"].isdigit()
    plans = {p["plan_id"]: p for p in _read_csv(SEEDS_DIR / "price_book_plans.csv")}
    book = _read_csv(SEEDS_DIR / "price_book_charges.csv")
    meters = {m["meter_id"] for m in _read_csv(SEEDS_DIR / "price_book_meters.csv")}
    start = int(datetime.combine(START, datetime.min.time(), tzinfo=UTC).timestamp())

    products = {p["id"] for p in stripe["products"]}
    prices = {p["lookup_key"]: p for p in stripe["prices"]}
    # A percentage charge has no Stripe price (docs/pricing.md, What Stripe receives).
    without_price = {(c["plan_id"], c["meter_id"]) for c in summary.charges_without_stripe_price}
    assert without_price == {
        (c["plan_id"], c["meter_id"]) for c in book if c["charge_model"] == "percentage"
    }
    assert without_price
    book = [c for c in book if (c["plan_id"], c["meter_id"]) not in without_price]
    assert len(prices) == len(stripe["prices"]) == len(book) + len(plans)
    for price in stripe["prices"]:
        assert price["product"] in products and price["currency"] == "usd"
        assert price["recurring_interval"] == "month"
    price_book = load_price_book(SEEDS_DIR)
    for row in book:
        assert row["meter_id"] in meters
        price = prices[f"{row['plan_id']}:{row['meter_id']}"]
        (dated,) = price_book.charges[(row["plan_id"], row["meter_id"])]
        fields = stripe_price_fields(dated.charge)  # tests/rating/test_stripe_prices.py
        assert price["billing_scheme"] == fields.billing_scheme
        assert price["unit_amount_decimal"] == (fields.unit_amount_decimal or "")
        assert price["tiers_mode"] == (fields.tiers_mode or "")
        tiers = json.loads(price["tiers"] or "[]")
        assert [
            (t["up_to"], t["unit_amount_decimal"], t["flat_amount_decimal"]) for t in tiers
        ] == [
            (t["up_to"], t["unit_amount_decimal"], t["flat_amount_decimal"]) for t in fields.tiers
        ]
        assert json.loads(price["transform_quantity"] or "null") == fields.transform_quantity
        assert price["recurring_usage_type"] == "metered"
    assert {p["billing_scheme"] for p in stripe["prices"]} == {"per_unit", "tiered"}
    assert any(p["transform_quantity"] for p in stripe["prices"])
    for plan_id, plan in plans.items():
        fee = prices[f"{plan_id}:platform_fee"]
        assert fee["recurring_usage_type"] == "licensed"
        assert int(fee["unit_amount"]) == int(plan["monthly_fee_minor"])

    customers = {c["id"]: c for c in stripe["customers"]}
    assert len(customers) == CUSTOMERS
    assert all(c["currency"] == "usd" and int(c["created"]) < start for c in customers.values())
    assert all(isinstance(json.loads(c["metadata"]), dict) for c in customers.values())
    subscriptions = {s["id"]: s for s in stripe["subscriptions"]}
    summary_anchor_days = generated[1].billing_anchor_days
    # One subscription per customer, and one customer changed plan mid-range (manifest).
    (change,) = generated[1].plan_changes
    assert sorted(s["customer"] for s in subscriptions.values()) == sorted(
        [*customers, change["customer_id"]]
    )
    items: dict[str, set[str]] = defaultdict(set)
    price_keys = {p["id"]: p["lookup_key"] for p in stripe["prices"]}
    for item in stripe["subscription_items"]:
        items[item["subscription"]].add(price_keys[item["price"]])
        assert item["quantity"] == "1"
    changed_at = change["changed_at"]
    assert start + 86_400 <= changed_at < start + DAYS * 86_400
    for sub_id, sub in subscriptions.items():
        plan_id = json.loads(sub["metadata"])["plan_id"]
        assert plan_id in plans
        assert sub["currency"] == "usd"
        assert int(sub["current_period_start"]) < int(sub["current_period_end"])
        if sub["customer"] == change["customer_id"]:
            new = sub_id == change["subscription_id"]
            assert plan_id == (change["to_plan"] if new else change["from_plan"])
            assert sub["status"] == ("active" if new else "canceled")
            if new:
                assert int(sub["start_date"]) == changed_at and sub["ended_at"] == ""
            else:
                assert int(sub["start_date"]) < start
                assert int(sub["ended_at"]) == int(sub["canceled_at"]) == changed_at
        else:
            assert sub["status"] == "active"
            assert int(sub["start_date"]) < start and sub["ended_at"] == sub["canceled_at"] == ""
        expected = {f"{plan_id}:platform_fee"} | {
            f"{plan_id}:{row['meter_id']}" for row in book if row["plan_id"] == plan_id
        }
        assert items[sub_id] == expected
        # A billing-cycle anchor at 00:00 UTC of the subscription's first day, or none; the
        # current period is the anchored one (calendar month without an anchor) holding the
        # last day; a plan change keeps the anchor.
        anchor_day = summary_anchor_days.get(sub["customer"])
        if anchor_day is None:
            assert sub["billing_cycle_anchor"] == ""
        else:
            anchor = int(sub["billing_cycle_anchor"])
            assert anchor % 86_400 == 0
            assert datetime.fromtimestamp(anchor, UTC).day == anchor_day
        period = billing_period_of(
            (datetime.fromtimestamp(start, UTC) + timedelta(days=DAYS - 1)).date(),
            anchor_day or 1,
        )
        assert (int(sub["current_period_start"]), int(sub["current_period_end"])) == tuple(
            int(datetime(d.year, d.month, d.day, tzinfo=UTC).timestamp()) for d in period
        )
    assert 0 < len(summary_anchor_days) < CUSTOMERS
    assert set(summary_anchor_days) <= set(customers)
