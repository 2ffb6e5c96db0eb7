"""The anomaly detectors on small warehouses built by hand: each finds exactly the anomaly
planted in it and nothing on clean data; findings are recorded once however often a day runs."""

from __future__ import annotations

import dataclasses
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import duckdb
import pytest

from orchestration.quality import anomalies
from orchestration.quality.anomalies import Finding
from orchestration.quality.thresholds import DEFAULT_THRESHOLDS_FILE, Thresholds, load_thresholds

DAY = date(2026, 10, 15)  # the usage date the partition touched
NEXT_DAY = DAY + timedelta(days=1)
LARGE_INPUT = "nimbus_large__input_tokens"
LARGE_REQUESTS = "nimbus_large__requests"
NO_SUBSCRIPTION: dict[str, None] = {"subscription_id": None, "plan_id": None}


@pytest.fixture
def thresholds() -> Thresholds:
    return load_thresholds(DEFAULT_THRESHOLDS_FILE)


@pytest.fixture
def warehouse() -> duckdb.DuckDBPyConnection:
    """Just the tables and columns the detectors read; arrival day DAY touched usage date DAY."""
    conn = duckdb.connect(":memory:")
    conn.execute("create schema ingest")
    conn.execute("create table ingest.partition_usage_dates (arrival_date date, usage_date date)")
    conn.execute("insert into ingest.partition_usage_dates values (?, ?)", [DAY, DAY])
    conn.execute(
        """
        create table billable_usage_daily (
            customer_id varchar, meter_id varchar, usage_date date, model varchar,
            subscription_id varchar, plan_id varchar, quantity_units hugeint,
            amount_minor_exact decimal(38, 12), currency varchar, is_priced boolean)
        """
    )
    conn.execute(
        """
        create table ingest.usage_file_counts (
            arrival_date date, source_file varchar, raw_lines bigint, accepted_lines bigint,
            duplicate_lines bigint, quarantined_lines bigint)
        """
    )
    conn.execute("create table ingest.quarantined_usage_lines (arrival_date date, reason varchar)")
    return conn


def _usage(
    conn: duckdb.DuckDBPyConnection,
    customer_id: str,
    day: date,
    quantity: int,
    *,
    meter_id: str = LARGE_INPUT,
    amount: str | None = None,
    currency: str = "usd",
    subscription_id: str | None = "sub_1",
    plan_id: str | None = "pro",
) -> None:
    model = meter_id.split("__")[0].replace("_", "-")
    priced = amount is not None or (subscription_id is not None and plan_id is not None)
    conn.execute(
        "insert into billable_usage_daily values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            customer_id,
            meter_id,
            day,
            model,
            subscription_id,
            plan_id,
            quantity,
            Decimal(amount if amount is not None else "0") if priced else None,
            currency if priced else None,
            priced,
        ],
    )


def _history(
    conn: duckdb.DuckDBPyConnection, customer_id: str, quantities: list[int | None]
) -> None:
    """``quantities[0]`` on the day before DAY, ``[1]`` two days before, …; None: no row."""
    for days_before, quantity in enumerate(quantities, start=1):
        if quantity is not None:
            _usage(conn, customer_id, DAY - timedelta(days=days_before), quantity)


def _volume(conn: duckdb.DuckDBPyConnection, thresholds: Thresholds) -> anomalies.Detection:
    return anomalies.detect_volume_anomalies(conn, start=DAY, end=NEXT_DAY, thresholds=thresholds)


# --- usage volume --------------------------------------------------------------------------------


def test_volume_finds_the_spike_and_nothing_on_steady_customers(
    warehouse: duckdb.DuckDBPyConnection, thresholds: Thresholds
) -> None:
    _history(warehouse, "cus_spiky", [900, 1_100] * 7)  # mean 1,000, sample stddev 103.78
    _usage(warehouse, "cus_spiky", DAY, 12_000)
    _history(warehouse, "cus_steady", [900, 1_100] * 7)
    _usage(warehouse, "cus_steady", DAY, 1_400)  # inside 1,000 ± 4 × 103.78

    detection = _volume(warehouse, thresholds)

    assert detection.kind == "usage_volume"
    assert detection.days == (DAY,)
    assert detection.examined == 2
    assert detection.findings == (
        Finding(
            finding_day=DAY,
            customer_id="cus_spiky",
            meter_id=LARGE_INPUT,
            observed="12,000 input tokens",
            expected="585–1,415 input tokens",
            threshold="volume_stddevs = 4.0, volume_window_days = 14, volume_min_history_days = 7",
            message=(
                "cus_spiky used 12,000 input tokens on nimbus-large on 2026-10-15; expected "
                "585–1,415 from the 14 days before (mean 1,000.0, ± 4.0 × stddev 103.8)."
            ),
        ),
    )


def test_volume_needs_enough_history(
    warehouse: duckdb.DuckDBPyConnection, thresholds: Thresholds
) -> None:
    """Six days since the first use is not enough (volume_min_history_days = 7); seven is."""
    _history(warehouse, "cus_new", [1_000, 1_001] * 3)
    _usage(warehouse, "cus_new", DAY, 50_000)
    assert _volume(warehouse, thresholds).findings == ()

    _history(warehouse, "cus_week", [1_000, 1_001] * 3 + [1_000])
    _usage(warehouse, "cus_week", DAY, 50_000)
    assert [f.customer_id for f in _volume(warehouse, thresholds).findings] == ["cus_week"]


def test_volume_without_usage_today_is_zero_and_idle_days_in_the_window_are_zero(
    warehouse: duckdb.DuckDBPyConnection, thresholds: Thresholds
) -> None:
    # Every day for two weeks, then nothing on DAY: a drop to 0 is found.
    _history(warehouse, "cus_silent", [1_000, 1_010] * 7)
    # Every other day: the idle days count as 0 (mean 500), so 1,000 today is ordinary; were
    # idle days left out, the history would be a flat 1,000 and 1,900 today an anomaly.
    _history(warehouse, "cus_alternate", [1_000, None] * 7)
    _usage(warehouse, "cus_alternate", DAY, 1_900)

    (finding,) = _volume(warehouse, thresholds).findings
    assert finding.customer_id == "cus_silent"
    assert finding.observed == "0 input tokens"
    assert finding.message.startswith(
        "cus_silent used no input tokens on nimbus-large on 2026-10-15; expected 985–1,025"
    )


def test_volume_window_ends_with_the_day_before_and_spans_window_days(
    warehouse: duckdb.DuckDBPyConnection, thresholds: Thresholds
) -> None:
    """A huge day 15 days back is outside the 14-day window: it does not widen the range."""
    _history(warehouse, "cus_a", [1_000, 1_010] * 7 + [5_000_000])
    _usage(warehouse, "cus_a", DAY, 2_000)
    (finding,) = _volume(warehouse, thresholds).findings
    assert "from the 14 days before" in finding.message

    wider = dataclasses.replace(thresholds, volume_window_days=15)
    assert _volume(warehouse, wider).findings == ()


def test_volume_one_finding_per_meter_with_singular_units(
    warehouse: duckdb.DuckDBPyConnection, thresholds: Thresholds
) -> None:
    for days_before in range(1, 15):
        _usage(warehouse, "cus_a", DAY - timedelta(days=days_before), 40, meter_id=LARGE_REQUESTS)
    _usage(warehouse, "cus_a", DAY, 1, meter_id=LARGE_REQUESTS)
    (finding,) = _volume(warehouse, thresholds).findings
    assert finding.observed == "1 request"
    assert finding.expected == "40–40 requests"


# --- quarantined and duplicate shares ------------------------------------------------------------


def _file_counts(
    conn: duckdb.DuckDBPyConnection, day: date, raw: int, duplicates: int, quarantined: int
) -> None:
    conn.execute(
        "insert into ingest.usage_file_counts values (?, ?, ?, ?, ?, ?)",
        [day, f"{day}/part-0000", raw, raw - duplicates - quarantined, duplicates, quarantined],
    )


def test_ingest_shares_above_the_limits_are_found_exactly(
    warehouse: duckdb.DuckDBPyConnection, thresholds: Thresholds
) -> None:
    """5 % quarantined and 10 % duplicates are at the limits (not found); one line more is."""
    first, second, outside = DAY, NEXT_DAY, NEXT_DAY + timedelta(days=1)
    _file_counts(warehouse, first, raw=100, duplicates=10, quarantined=6)
    _file_counts(warehouse, second, raw=60, duplicates=6, quarantined=1)
    _file_counts(warehouse, second, raw=40, duplicates=5, quarantined=4)
    _file_counts(warehouse, outside, raw=10, duplicates=5, quarantined=5)
    warehouse.executemany(
        "insert into ingest.quarantined_usage_lines values (?, ?)",
        [[first, "invalid_json"]] * 4 + [[first, "unknown_customer"]] * 2,
    )

    detection = anomalies.detect_ingest_share_anomalies(
        warehouse, start=first, end=outside, thresholds=thresholds
    )

    assert detection.days == (first, second)
    assert [(f.finding_day, f.observed, f.threshold) for f in detection.findings] == [
        (first, "6 of 100 lines (6.0 %)", "max_quarantined_share = 0.05"),
        (second, "11 of 100 lines (11.0 %)", "max_duplicate_share = 0.10"),
    ]
    assert detection.findings[0].message == (
        "On arrival day 2026-10-15, 6 of 100 raw lines (6.0 %) were quarantined, above the "
        "5 % limit; most common reasons: invalid_json (4), unknown_customer (2)."
    )
    assert detection.findings[1].expected == "at most 10 %"


def test_ingest_shares_at_or_below_the_limits_find_nothing(
    warehouse: duckdb.DuckDBPyConnection, thresholds: Thresholds
) -> None:
    _file_counts(warehouse, DAY, raw=100, duplicates=10, quarantined=5)
    detection = anomalies.detect_ingest_share_anomalies(
        warehouse, start=DAY, end=NEXT_DAY, thresholds=thresholds
    )
    assert detection.findings == ()
    assert detection.examined == 1


# --- usage without a subscription -------------------------------------------------------------


def test_usage_without_subscription_finds_unpriced_usage_of_touched_dates_only(
    warehouse: duckdb.DuckDBPyConnection, thresholds: Thresholds
) -> None:
    _usage(warehouse, "cus_paying", DAY, 1_000, amount="0.27")
    for meter_id, quantity in ((LARGE_REQUESTS, 2), (LARGE_INPUT, 2_000)):
        _usage(warehouse, "cus_nosub", DAY, quantity, meter_id=meter_id, **NO_SUBSCRIPTION)
    _usage(warehouse, "cus_nosub", DAY, 1, meter_id="nimbus_small__requests", **NO_SUBSCRIPTION)
    _usage(warehouse, "cus_noplan", DAY, 7, meter_id=LARGE_REQUESTS, plan_id=None)
    # Not a touched date: judged by the run of the arrival day that touches it.
    _usage(warehouse, "cus_earlier", DAY - timedelta(days=1), 5, **NO_SUBSCRIPTION)

    detection = anomalies.detect_usage_without_subscription(
        warehouse, start=DAY, end=NEXT_DAY, thresholds=thresholds
    )

    assert detection.kind == "usage_without_subscription"
    assert [(f.customer_id, f.observed) for f in detection.findings] == [
        ("cus_noplan", "subscription sub_1 without plan_id"),
        ("cus_nosub", "no subscription"),
    ]
    assert detection.findings[1].message == (
        "cus_nosub used 2,000 input tokens and 2 requests on nimbus-large; 1 request on "
        "nimbus-small on 2026-10-15 but had no subscription in force that day; this usage is "
        "not billed."
    )
    assert all(f.meter_id is None and f.finding_day == DAY for f in detection.findings)


def test_usage_without_a_price_in_the_plan_is_found(
    warehouse: duckdb.DuckDBPyConnection, thresholds: Thresholds
) -> None:
    warehouse.execute(
        "insert into billable_usage_daily values "
        "('cus_a', 'nimbus_reasoning__requests', ?, 'nimbus-reasoning', 'sub_1', 'starter', 3, "
        "null, null, false)",
        [DAY],
    )
    (finding,) = anomalies.detect_usage_without_subscription(
        warehouse, start=DAY, end=NEXT_DAY, thresholds=thresholds
    ).findings
    assert finding.observed == "plan starter has no price for nimbus_reasoning__requests"
    assert finding.message.startswith("cus_a used 3 requests on nimbus-reasoning on 2026-10-15")


def test_usage_without_subscription_finds_nothing_when_all_usage_is_priced(
    warehouse: duckdb.DuckDBPyConnection, thresholds: Thresholds
) -> None:
    _usage(warehouse, "cus_paying", DAY, 1_000, amount="0.27")
    detection = anomalies.detect_usage_without_subscription(
        warehouse, start=DAY, end=NEXT_DAY, thresholds=thresholds
    )
    assert detection.findings == ()
    assert detection.days == (DAY,)


# --- revenue day over day ----------------------------------------------------------------------


def _revenue(conn: duckdb.DuckDBPyConnection, day: date, amount: str, currency: str) -> None:
    _usage(conn, f"cus_{currency}", day, 1, amount=amount, currency=currency)


def test_revenue_change_compares_exact_amounts(
    warehouse: duckdb.DuckDBPyConnection, thresholds: Thresholds
) -> None:
    """+50 % exactly is at the limit; a trillionth of a cent more is above it, which a binary
    float cannot tell at these amounts."""
    yesterday = DAY - timedelta(days=1)
    _revenue(warehouse, yesterday, "600000000", "usd")
    _revenue(warehouse, yesterday, "400000000", "usd")
    _revenue(warehouse, DAY, "1500000000.000000000001", "usd")
    _revenue(warehouse, yesterday, "20000", "eur")
    _revenue(warehouse, DAY, "30000", "eur")

    detection = anomalies.detect_revenue_changes(
        warehouse, start=DAY, end=NEXT_DAY, thresholds=thresholds
    )

    assert detection.examined == 2
    (finding,) = detection.findings
    assert finding.observed == "$15,000,000.00000000000001"
    assert finding.expected == "$5,000,000.00–$15,000,000.00"
    assert finding.threshold == "max_revenue_change_share = 0.5"
    assert finding.message == (
        "Rated revenue in USD on 2026-10-15 was $15,000,000.00000000000001, up 50.0 % from "
        "$10,000,000.00 on 2026-10-14; a change above 50 % warns."
    )


def test_revenue_drop_to_nothing_is_found_and_a_first_day_is_not_judged(
    warehouse: duckdb.DuckDBPyConnection, thresholds: Thresholds
) -> None:
    _revenue(warehouse, DAY - timedelta(days=1), "2500", "usd")  # then nothing rated on DAY
    _revenue(warehouse, DAY, "900", "eur")  # no eur the day before: no baseline
    _revenue(warehouse, DAY - timedelta(days=1), "0", "gbp")  # rated, but nothing to compare
    _revenue(warehouse, DAY, "700", "gbp")
    (finding,) = anomalies.detect_revenue_changes(
        warehouse, start=DAY, end=NEXT_DAY, thresholds=thresholds
    ).findings
    assert finding.observed == "$0.00"
    assert "down 100.0 % from $25.00" in finding.message


def test_revenue_change_finds_nothing_on_steady_revenue(
    warehouse: duckdb.DuckDBPyConnection, thresholds: Thresholds
) -> None:
    _revenue(warehouse, DAY - timedelta(days=1), "10000", "usd")
    _revenue(warehouse, DAY, "5000", "usd")  # -50 %: at the limit
    detection = anomalies.detect_revenue_changes(
        warehouse, start=DAY, end=NEXT_DAY, thresholds=thresholds
    )
    assert detection.findings == ()
    assert detection.examined == 1


# --- thresholds from a file --------------------------------------------------------------------


def test_thresholds_come_from_the_configured_file(
    warehouse: duckdb.DuckDBPyConnection, thresholds: Thresholds, tmp_path: Path
) -> None:
    _history(warehouse, "cus_a", [900, 1_100] * 7)
    _usage(warehouse, "cus_a", DAY, 12_000)
    _file_counts(warehouse, DAY, raw=100, duplicates=0, quarantined=6)
    assert _volume(warehouse, thresholds).findings
    custom = tmp_path / "quality.toml"
    custom.write_text(
        DEFAULT_THRESHOLDS_FILE.read_text()
        .replace("volume_stddevs = 4.0", "volume_stddevs = 120")
        .replace("max_quarantined_share = 0.05", "max_quarantined_share = 0.06")
    )
    relaxed = load_thresholds(custom)

    volume = _volume(warehouse, relaxed)
    shares = anomalies.detect_ingest_share_anomalies(
        warehouse, start=DAY, end=NEXT_DAY, thresholds=relaxed
    )
    assert volume.findings == ()
    assert volume.thresholds["volume_stddevs"] == "120"
    assert shares.findings == ()
    assert shares.thresholds["max_quarantined_share"] == "0.06"


# --- recording ------------------------------------------------------------------------------


def _recorded(conn: duckdb.DuckDBPyConnection) -> list[tuple[object, ...]]:
    return conn.execute(
        "select finding_day, kind, customer_id, message from quality.anomaly_findings "
        "order by finding_day, kind, customer_id"
    ).fetchall()


def test_recording_the_same_days_twice_keeps_one_copy(
    warehouse: duckdb.DuckDBPyConnection, thresholds: Thresholds
) -> None:
    _history(warehouse, "cus_a", [900, 1_100] * 7)
    _usage(warehouse, "cus_a", DAY, 12_000)
    detection = _volume(warehouse, thresholds)
    other = Finding(DAY, None, None, "x", "y", "z", "another kind's finding")

    anomalies.record_findings(warehouse, "revenue_change", [DAY], [other])
    for _ in range(2):
        written = anomalies.record_findings(
            warehouse, detection.kind, detection.days, detection.findings
        )
        assert written == 1
    assert _recorded(warehouse) == [
        (DAY, "revenue_change", None, "another kind's finding"),
        (DAY, "usage_volume", "cus_a", detection.findings[0].message),
    ]

    # The day is clean now: its volume finding goes, the other kind's stays.
    anomalies.record_findings(warehouse, "usage_volume", [DAY], [])
    assert _recorded(warehouse) == [(DAY, "revenue_change", None, "another kind's finding")]


def test_recording_keeps_other_days_and_stamps_the_detection_time(
    warehouse: duckdb.DuckDBPyConnection,
) -> None:
    earlier = Finding(DAY - timedelta(days=1), "cus_a", None, "o", "e", "t", "earlier day")
    today = Finding(DAY, "cus_a", None, "o", "e", "t", "today")
    moment = datetime(2026, 10, 16, 1, 0, tzinfo=UTC)
    anomalies.record_findings(warehouse, "usage_volume", [earlier.finding_day], [earlier])
    anomalies.record_findings(warehouse, "usage_volume", [DAY], [today], detected_at=moment)

    assert [row[3] for row in _recorded(warehouse)] == ["earlier day", "today"]
    stamped = warehouse.execute(
        "select detected_at from quality.anomaly_findings where message = 'today'"
    ).fetchone()
    assert stamped == (moment,)


def test_recording_refuses_a_finding_outside_the_judged_days(
    warehouse: duckdb.DuckDBPyConnection,
) -> None:
    stray = Finding(NEXT_DAY, "cus_a", None, "o", "e", "t", "stray")
    with pytest.raises(ValueError, match="not judged"):
        anomalies.record_findings(warehouse, "usage_volume", [DAY], [stray])
