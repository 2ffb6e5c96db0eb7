"""Anomaly detectors: findings worth a look that must not stop billing.

The gates (the GX suites) block a day whose data is wrong; these warn about data that is
possible but unusual: a customer whose daily volume leaves its usual range, a day with many
quarantined or duplicate lines, usage that nobody pays for, revenue that jumps from one day to
the next. Each detector reads the warehouse for one partition window (arrival days, end
exclusive) and returns a ``Detection``; ``record_findings`` keeps its findings in
``quality.anomaly_findings``, replacing what an earlier run of the same days found.

Money is compared as exact DECIMALs in SQL and shown as exact strings; volume statistics are
computed from exact integer sums with ``Decimal``, so a result never depends on float order.
"""

from __future__ import annotations

import decimal
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import duckdb

from orchestration.quality.thresholds import Thresholds
from reporting.money import format_money

USAGE_VOLUME = "usage_volume"
INGEST_SHARE = "ingest_share"
USAGE_WITHOUT_SUBSCRIPTION = "usage_without_subscription"
REVENUE_CHANGE = "revenue_change"

# Enough digits for any amount at scale 12 and any token count squared.
EXACT = decimal.Context(prec=80, rounding=decimal.ROUND_HALF_UP)

FINDINGS_SCHEMA_SQL = """
create schema if not exists quality;
create table if not exists quality.anomaly_findings (
    finding_day date not null,
    kind varchar not null,
    customer_id varchar,
    meter_id varchar,
    observed varchar not null,
    expected varchar not null,
    threshold varchar not null,
    message varchar not null,
    detected_at timestamptz not null
);
"""


@dataclass(frozen=True)
class Finding:
    """One thing worth a look. ``finding_day`` is a usage date, or an arrival day for
    ``ingest_share``; ``customer_id``/``meter_id`` are empty when the finding is not theirs."""

    finding_day: date
    customer_id: str | None
    meter_id: str | None
    observed: str
    expected: str
    threshold: str
    message: str


@dataclass(frozen=True)
class Detection:
    """What one detector found over one partition window.

    ``days`` are the days it judged: recording the detection replaces every earlier finding of
    its kind on those days, so a day that is clean now loses its old findings.
    """

    kind: str
    days: tuple[date, ...]
    findings: tuple[Finding, ...]
    examined: int  # how many rows were judged (series-days, arrival days, currency-days…)
    thresholds: dict[str, str]


def touched_usage_dates(
    conn: duckdb.DuckDBPyConnection, *, start: date, end: date
) -> tuple[date, ...]:
    """The usage dates the window's arrival days touched (late events included)."""
    rows = conn.execute(
        "select distinct usage_date from ingest.partition_usage_dates "
        "where arrival_date >= ? and arrival_date < ? order by usage_date",
        [start, end],
    ).fetchall()
    return tuple(day for (day,) in rows)


def arrival_days(*, start: date, end: date) -> tuple[date, ...]:
    return tuple(start + timedelta(days=n) for n in range((end - start).days))


# --- Usage volume per customer and meter ------------------------------------------------------

# For each series (customer, meter) that was used before a touched date: the exact sums of the
# trailing window. The window is the `volume_window_days` days before the date, cut at the
# series' first usage: days before a customer first used a meter are not history, days after it
# without usage count as 0 (they have no row, so they add nothing to the sums, but they count
# in `history_days`).
VOLUME_SQL = """
with touched as (
    select distinct usage_date from ingest.partition_usage_dates
    where arrival_date >= $start and arrival_date < $end
),
daily as (
    select customer_id, meter_id, usage_date, model, quantity_units from billable_usage_daily
),
series as (
    select customer_id, meter_id, any_value(model) as model, min(usage_date) as first_usage_date
    from daily group by customer_id, meter_id
),
candidates as (
    select series.customer_id, series.meter_id, series.model, touched.usage_date,
        greatest(series.first_usage_date, touched.usage_date - cast($window_days as integer))
            as window_start_date
    from series
    inner join touched on series.first_usage_date < touched.usage_date
),
judged as (
    select candidates.customer_id, candidates.meter_id, candidates.model,
        candidates.usage_date,
        datediff('day', candidates.window_start_date, candidates.usage_date) as history_days,
        coalesce(sum(history.quantity_units), 0)::hugeint as history_sum,
        coalesce(sum(history.quantity_units::hugeint * history.quantity_units), 0)::hugeint
            as history_sum_squares,
        coalesce(any_value(today.quantity_units), 0)::hugeint as quantity_units
    from candidates
    left join daily as history
        on history.customer_id = candidates.customer_id
        and history.meter_id = candidates.meter_id
        and history.usage_date >= candidates.window_start_date
        and history.usage_date < candidates.usage_date
    left join daily as today
        on today.customer_id = candidates.customer_id
        and today.meter_id = candidates.meter_id
        and today.usage_date = candidates.usage_date
    group by all
)
select customer_id, meter_id, model, usage_date, history_days, history_sum,
    history_sum_squares, quantity_units
from judged
where history_days >= $min_history_days
order by usage_date, customer_id, meter_id
"""


@dataclass(frozen=True)
class ExpectedRange:
    """mean ± k·stddev of a trailing window (sample stddev, exact ``Decimal``)."""

    mean: Decimal
    stddev: Decimal
    lower: Decimal
    upper: Decimal

    def contains(self, quantity: int) -> bool:
        return self.lower <= quantity <= self.upper


def expected_range(
    *, history_days: int, history_sum: int, history_sum_squares: int, stddevs: Decimal
) -> ExpectedRange:
    """The range a day's quantity is expected in, from the exact sums over ``history_days``
    days (days without usage included as 0)."""
    if history_days < 2:
        raise ValueError(f"a standard deviation needs two days of history, not {history_days}")
    mean = EXACT.divide(Decimal(history_sum), Decimal(history_days))
    # Sample variance: (n·Σx² − (Σx)²) / (n·(n − 1)), exact up to the division.
    spread = history_days * history_sum_squares - history_sum * history_sum
    variance = EXACT.divide(Decimal(spread), Decimal(history_days * (history_days - 1)))
    stddev = EXACT.sqrt(variance)
    margin = EXACT.multiply(stddevs, stddev)
    return ExpectedRange(
        mean=mean,
        stddev=stddev,
        lower=EXACT.subtract(mean, margin),
        upper=EXACT.add(mean, margin),
    )


def detect_volume_anomalies(
    conn: duckdb.DuckDBPyConnection, *, start: date, end: date, thresholds: Thresholds
) -> Detection:
    """Daily quantities per customer and meter outside the trailing window's expected range.

    Judged only with at least ``volume_min_history_days`` days of history (and never fewer
    than two: one day has no spread); a touched date without usage of a series that has
    history is judged as 0, so a steady customer who suddenly sends nothing is found too.
    """
    min_history_days = max(thresholds.volume_min_history_days, 2)
    rows = conn.execute(
        VOLUME_SQL,
        {
            "start": start,
            "end": end,
            "window_days": thresholds.volume_window_days,
            "min_history_days": min_history_days,
        },
    ).fetchall()
    threshold = (
        f"volume_stddevs = {thresholds.volume_stddevs}, "
        f"volume_window_days = {thresholds.volume_window_days}, "
        f"volume_min_history_days = {thresholds.volume_min_history_days}"
    )
    findings = []
    for customer_id, meter_id, model, usage_date, days, total, squares, quantity in rows:
        bounds = expected_range(
            history_days=days,
            history_sum=int(total),
            history_sum_squares=int(squares),
            stddevs=thresholds.volume_stddevs,
        )
        if bounds.contains(int(quantity)):
            continue
        expected = _integer_range(bounds)
        used = _quantity(int(quantity), meter_id) if quantity else f"no {_unit(meter_id, 2)}"
        findings.append(
            Finding(
                finding_day=usage_date,
                customer_id=customer_id,
                meter_id=meter_id,
                observed=_quantity(int(quantity), meter_id),
                expected=f"{expected} {_unit(meter_id, 2)}",
                threshold=threshold,
                message=(
                    f"{customer_id} used {used} on {model} on {usage_date.isoformat()}; "
                    f"expected {expected} from the {days} days before "
                    f"(mean {_number(bounds.mean)}, ± {thresholds.volume_stddevs} × stddev "
                    f"{_number(bounds.stddev)})."
                ),
            )
        )
    return Detection(
        kind=USAGE_VOLUME,
        days=touched_usage_dates(conn, start=start, end=end),
        findings=tuple(findings),
        examined=len(rows),
        thresholds={
            "volume_window_days": str(thresholds.volume_window_days),
            "volume_min_history_days": str(thresholds.volume_min_history_days),
            "volume_stddevs": str(thresholds.volume_stddevs),
        },
    )


def _integer_range(bounds: ExpectedRange) -> str:
    """The whole quantities inside the range (quantities are whole units, never negative)."""
    lowest = max(bounds.lower.to_integral_value(rounding=decimal.ROUND_CEILING), Decimal(0))
    highest = bounds.upper.to_integral_value(rounding=decimal.ROUND_FLOOR)
    if lowest > highest:  # a range too narrow to hold a whole number
        return f"{_number(bounds.lower)}–{_number(bounds.upper)}"
    return f"{int(lowest):,}–{int(highest):,}"


def _number(value: Decimal) -> str:
    return f"{value.quantize(Decimal('0.1'), rounding=decimal.ROUND_HALF_UP):,}"


def _unit(meter_id: str, quantity: int) -> str:
    """``nimbus_large__input_tokens`` → ``input tokens`` (``input token`` for one)."""
    label = meter_id.rsplit("__", 1)[-1].replace("_", " ")
    return label.removesuffix("s") if quantity == 1 else label


def _quantity(quantity: int, meter_id: str) -> str:
    return f"{quantity:,} {_unit(meter_id, quantity)}"


# --- Quarantined and duplicate lines per arrival day -------------------------------------------

INGEST_SHARE_SQL = """
select arrival_date,
    sum(raw_lines)::bigint as raw_lines,
    sum(quarantined_lines)::bigint as quarantined_lines,
    sum(duplicate_lines)::bigint as duplicate_lines,
    sum(quarantined_lines) > sum(raw_lines) * $max_quarantined_share as too_many_quarantined,
    sum(duplicate_lines) > sum(raw_lines) * $max_duplicate_share as too_many_duplicates
from ingest.usage_file_counts
where arrival_date >= $start and arrival_date < $end
group by arrival_date
order by arrival_date
"""

QUARANTINE_REASONS_SQL = """
select arrival_date, reason, count(*) as lines
from ingest.quarantined_usage_lines
where arrival_date >= ? and arrival_date < ?
group by arrival_date, reason
order by arrival_date, lines desc, reason
"""


def detect_ingest_share_anomalies(
    conn: duckdb.DuckDBPyConnection, *, start: date, end: date, thresholds: Thresholds
) -> Detection:
    """Arrival days whose share of quarantined, or of duplicate, raw lines is above its limit
    (compared exactly: lines > raw lines × share)."""
    rows = conn.execute(
        INGEST_SHARE_SQL,
        {
            "start": start,
            "end": end,
            "max_quarantined_share": thresholds.max_quarantined_share,
            "max_duplicate_share": thresholds.max_duplicate_share,
        },
    ).fetchall()
    reasons: dict[date, list[tuple[str, int]]] = defaultdict(list)
    if any(row[4] for row in rows):
        for arrival_date, reason, lines in conn.execute(
            QUARANTINE_REASONS_SQL, [start, end]
        ).fetchall():
            reasons[arrival_date].append((reason, lines))
    findings = []
    for arrival_date, raw, quarantined, duplicates, many_quarantined, many_duplicates in rows:
        day = arrival_date.isoformat()
        if many_quarantined:
            top = ", ".join(f"{reason} ({lines:,})" for reason, lines in reasons[arrival_date][:3])
            findings.append(
                _share_finding(
                    arrival_date,
                    lines=quarantined,
                    raw=raw,
                    limit=thresholds.max_quarantined_share,
                    key="max_quarantined_share",
                    sentence=(
                        f"On arrival day {day}, {quarantined:,} of {raw:,} raw lines "
                        f"({_percent(quarantined, raw)}) were quarantined, above the "
                        f"{_share_percent(thresholds.max_quarantined_share)} limit; "
                        f"most common reasons: {top}."
                    ),
                )
            )
        if many_duplicates:
            findings.append(
                _share_finding(
                    arrival_date,
                    lines=duplicates,
                    raw=raw,
                    limit=thresholds.max_duplicate_share,
                    key="max_duplicate_share",
                    sentence=(
                        f"On arrival day {day}, {duplicates:,} of {raw:,} raw lines "
                        f"({_percent(duplicates, raw)}) were duplicates of earlier lines, above "
                        f"the {_share_percent(thresholds.max_duplicate_share)} limit "
                        "(retries at the edge?)."
                    ),
                )
            )
    return Detection(
        kind=INGEST_SHARE,
        days=arrival_days(start=start, end=end),
        findings=tuple(findings),
        examined=len(rows),
        thresholds={
            "max_quarantined_share": str(thresholds.max_quarantined_share),
            "max_duplicate_share": str(thresholds.max_duplicate_share),
        },
    )


def _share_finding(
    arrival_date: date, *, lines: int, raw: int, limit: Decimal, key: str, sentence: str
) -> Finding:
    return Finding(
        finding_day=arrival_date,
        customer_id=None,
        meter_id=None,
        observed=f"{lines:,} of {raw:,} lines ({_percent(lines, raw)})",
        expected=f"at most {_share_percent(limit)}",
        threshold=f"{key} = {limit}",
        message=sentence,
    )


def _percent(part: int, whole: int) -> str:
    share = EXACT.divide(Decimal(part) * 100, Decimal(max(whole, 1)))
    return f"{share.quantize(Decimal('0.1'), rounding=decimal.ROUND_HALF_UP)} %"


def _share_percent(share: Decimal) -> str:
    return f"{(share * 100).normalize():f} %"


# --- Usage nobody pays for ---------------------------------------------------------------------

UNPRICED_USAGE_SQL = """
select customer_id, usage_date, subscription_id, plan_id, model, meter_id, quantity_units
from billable_usage_daily
where not is_priced
  and usage_date in (
      select usage_date from ingest.partition_usage_dates
      where arrival_date >= ? and arrival_date < ?)
order by usage_date, customer_id, model, meter_id
"""


def detect_usage_without_subscription(
    conn: duckdb.DuckDBPyConnection, *, start: date, end: date, thresholds: Thresholds
) -> Detection:
    """Customers with usage on a touched date that is not billed (``is_priced`` false): no
    subscription in force that day, a subscription without a plan, or no price for the meter.

    One finding per customer and usage date (``meter_id`` empty): the message lists what was
    used. Usage of a model no meter knows never reaches ``billable_usage_daily``; the dbt test
    on ``int_unmetered_usage_daily`` fails on it instead.
    """
    rows = conn.execute(UNPRICED_USAGE_SQL, [start, end]).fetchall()
    # The subscription and plan in force are the customer's on that day, the same on each row.
    plans: dict[tuple[str, date], tuple[str | None, str | None]] = {}
    grouped: dict[tuple[str, date], list[tuple[str, str, int]]] = defaultdict(list)
    for customer_id, usage_date, subscription_id, plan_id, model, meter_id, quantity in rows:
        plans.setdefault((customer_id, usage_date), (subscription_id, plan_id))
        grouped[(customer_id, usage_date)].append((model, meter_id, int(quantity)))
    findings = []
    for (customer_id, usage_date), meters in grouped.items():
        subscription_id, plan_id = plans[(customer_id, usage_date)]
        day = usage_date.isoformat()
        if subscription_id is None:
            observed = "no subscription"
            expected = f"a subscription in force on {day}"
            why = "had no subscription in force that day"
        elif plan_id is None:
            observed = f"subscription {subscription_id} without plan_id"
            expected = "a plan_id in the subscription's metadata"
            why = f"their subscription {subscription_id} names no plan (metadata plan_id)"
        else:
            meter_ids = ", ".join(meter_id for _, meter_id, _ in meters)
            observed = f"plan {plan_id} has no price for {meter_ids}"
            expected = f"a price of plan {plan_id} for every meter used"
            why = f"plan {plan_id} has no price for {meter_ids} in the price book"
        findings.append(
            Finding(
                finding_day=usage_date,
                customer_id=customer_id,
                meter_id=None,
                observed=observed,
                expected=expected,
                threshold="any unpriced usage",
                message=(
                    f"{customer_id} used {_usage_summary(meters)} on {day} but {why}; "
                    "this usage is not billed."
                ),
            )
        )
    return Detection(
        kind=USAGE_WITHOUT_SUBSCRIPTION,
        days=touched_usage_dates(conn, start=start, end=end),
        findings=tuple(findings),
        examined=len(rows),
        thresholds={"usage_without_subscription": "any unpriced usage"},
    )


def _usage_summary(meters: list[tuple[str, str, int]]) -> str:
    """``2 requests and 2,000 input tokens on nimbus-large; 1 request on nimbus-small``."""
    by_model: dict[str, list[str]] = defaultdict(list)
    for model, meter_id, quantity in meters:
        if quantity:
            by_model[model].append(_quantity(quantity, meter_id))
    if not by_model:
        return "nothing measurable"
    return "; ".join(f"{_and(parts)} on {model}" for model, parts in by_model.items())


def _and(parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else f"{', '.join(parts[:-1])} and {parts[-1]}"


# --- Rated revenue day over day ----------------------------------------------------------------

# Per touched date and currency: the day's rated amount and the day before's, compared as exact
# DECIMALs. A day after a day without rated revenue in that currency has no baseline and is not
# judged; a touched date without revenue after a day with revenue is a 100 % drop.
REVENUE_SQL = """
with touched as (
    select distinct usage_date from ingest.partition_usage_dates
    where arrival_date >= $start and arrival_date < $end
),
daily as (
    select usage_date, currency, sum(amount_minor_exact) as amount_minor_exact
    from billable_usage_daily
    where is_priced
    group by usage_date, currency
),
compared as (
    select touched.usage_date, previous_day.currency,
        coalesce(this_day.amount_minor_exact, 0) as amount_minor_exact,
        previous_day.amount_minor_exact as previous_amount_minor_exact
    from touched
    inner join daily as previous_day
        on previous_day.usage_date = touched.usage_date - 1
        and previous_day.amount_minor_exact > 0
    left join daily as this_day
        on this_day.usage_date = touched.usage_date
        and this_day.currency = previous_day.currency
)
select usage_date, currency, amount_minor_exact, previous_amount_minor_exact,
    abs(amount_minor_exact - previous_amount_minor_exact)
        > previous_amount_minor_exact * $max_change_share as is_anomalous
from compared
order by usage_date, currency
"""


def detect_revenue_changes(
    conn: duckdb.DuckDBPyConnection, *, start: date, end: date, thresholds: Thresholds
) -> Detection:
    """Touched dates whose total rated amount (all customers, per currency) moved by more than
    ``max_revenue_change_share`` of the day before's."""
    share = thresholds.max_revenue_change_share
    rows = conn.execute(
        REVENUE_SQL, {"start": start, "end": end, "max_change_share": share}
    ).fetchall()
    findings = []
    for usage_date, currency, amount, previous, is_anomalous in rows:
        if not is_anomalous:
            continue
        change = EXACT.divide(EXACT.subtract(amount, previous) * 100, previous)
        direction = "up" if change > 0 else "down"
        change_text = f"{abs(change).quantize(Decimal('0.1'), rounding=decimal.ROUND_HALF_UP)} %"
        lowest = EXACT.multiply(previous, 1 - share)
        highest = EXACT.multiply(previous, 1 + share)
        findings.append(
            Finding(
                finding_day=usage_date,
                customer_id=None,
                meter_id=None,
                observed=format_money(amount, currency),
                expected=f"{format_money(lowest, currency)}–{format_money(highest, currency)}",
                threshold=f"max_revenue_change_share = {share}",
                message=(
                    f"Rated revenue in {currency.upper()} on {usage_date.isoformat()} was "
                    f"{format_money(amount, currency)}, {direction} {change_text} from "
                    f"{format_money(previous, currency)} on "
                    f"{(usage_date - timedelta(days=1)).isoformat()}; a change above "
                    f"{_share_percent(share)} warns."
                ),
            )
        )
    return Detection(
        kind=REVENUE_CHANGE,
        days=touched_usage_dates(conn, start=start, end=end),
        findings=tuple(findings),
        examined=len(rows),
        thresholds={"max_revenue_change_share": str(share)},
    )


# --- Keeping findings --------------------------------------------------------------------------


def ensure_findings_table(conn: duckdb.DuckDBPyConnection) -> None:
    conn.execute(FINDINGS_SCHEMA_SQL)


def record_findings(
    conn: duckdb.DuckDBPyConnection,
    kind: str,
    days: Sequence[date],
    findings: Sequence[Finding],
    *,
    detected_at: datetime | None = None,
) -> int:
    """Replace the findings of ``kind`` on ``days`` with ``findings``, in one transaction.

    Re-running a partition therefore never duplicates a finding, and a day that is clean now
    loses the findings an earlier run recorded. Returns the number of findings written.
    """
    outside = sorted({f.finding_day for f in findings} - set(days))
    if outside:
        # It would survive the next run's replacement and be listed twice after it.
        raise ValueError(f"{kind} findings on days that were not judged: {outside}")
    moment = detected_at or datetime.now(UTC)
    ensure_findings_table(conn)
    conn.execute("begin transaction")
    try:
        if days:
            conn.execute(
                "delete from quality.anomaly_findings "
                "where kind = ? and finding_day in (select unnest(?::date[]))",
                [kind, sorted(set(days))],
            )
        if findings:
            conn.executemany(
                "insert into quality.anomaly_findings (finding_day, kind, customer_id, "
                "meter_id, observed, expected, threshold, message, detected_at) "
                "values (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    [
                        f.finding_day,
                        kind,
                        f.customer_id,
                        f.meter_id,
                        f.observed,
                        f.expected,
                        f.threshold,
                        f.message,
                        moment,
                    ]
                    for f in findings
                ],
            )
        conn.execute("commit")
    except BaseException:
        conn.execute("rollback")
        raise
    return len(findings)
