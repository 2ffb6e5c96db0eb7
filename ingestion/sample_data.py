"""Deterministic, realistic sample data: raw usage logs with the edge's mess, and Stripe exports.

``generate_sample_data(output_dir, start_date=…, days=…, customers=…, events_per_day=…, seed=…,
price_book_dir=…)`` writes, under ``output_dir/raw``:

- ``usage/date=YYYY-MM-DD/hour=HH/part-0000.ndjson.gz``: gzip NDJSON by *arrival* hour
  (``received_at``), one event per line in the contract of ``../shared/README.md`` §2;
- ``stripe/{customers,products,prices,subscriptions,subscription_items}.csv``: the Stripe objects
  of ``docs/architecture.md``, consistent with the usage and the price book (one active
  subscription per customer covering the whole range, except one customer who changes plan
  mid-range (``PlanChange``); per plan and meter, the metered Stripe price that bills what the
  charge rates (``pricing.stripe_prices``); a licensed ``platform_fee`` price per plan; a
  quarter of the subscriptions carry a ``billing_cycle_anchor`` at 00:00 UTC of the day they
  were created, so those customers are billed from that day of the month, the rest on calendar
  months);
- ``sample_manifest.json``: the ``GenerationSummary`` (what was injected, per arrival day).

Same arguments, same bytes: everything random comes from one ``numpy.random.default_rng(seed)``
drawn in a fixed order, gzip members carry ``mtime`` 0, nothing reads a clock. Columns are
generated vectorised with numpy and formatted with polars an hour at a time (the mess is injected
on small subsets), and each hour file is compressed in a background thread while the next hour is
generated, so a day of 20 M events never sits in memory whole.

The data: customers get a volume weight from a lognormal (a few heavy, many light) and a plan
from ``price_book_plans.csv`` (heavier customers tend to be on pricier plans); events follow a
daily curve (quiet at night UTC); models are the price book's ``model`` values with different
popularity (``MODEL_WEIGHTS``); token counts are lognormal per model and ``request_kind``
(``agent`` calls carry long contexts and read the cache most), capped far below ingestion's
100,000,000; ``occurred_at`` is normally 0.05 to 3 s (lognormal, median 0.3 s) before
``received_at``.

The mess, at the rates of ``MessRates`` (shares of a day's clean events; all configurable):

=========================  =======  ==========================================================
field                      default  what is written
=========================  =======  ==========================================================
``retry``                  1 %      the same event again, with the same body: an edge retry.
``retry_quick_share``      50 %     of retries (and conflicts): re-sent 0.1 s to 2 min after the
                                    original (mostly the same hour file); the others 2 min to
                                    3 h later (often a later hour file) ...
``retry_next_day_share``   10 %     ... and this share of them one day later still (next day's
                                    file). Every copy's ``received_at`` is strictly later than
                                    the original's, so the original is the first copy.
``conflict``               0.1 %    the same ``event_id`` later (like a retry) with a
                                    different ``output_tokens``: a conflicting duplicate.
``late``                   3 %      ``occurred_at`` 1 to 24 hours before ``received_at`` ...
``late_days_share``        25 %     ... or, for this share of them, 1 to 3 days before (the
                                    event lands in an earlier day's, maybe period's, usage).
``malformed``              0.3 %    one of ``MALFORMED_KINDS``, uniformly: invalid JSON, a
                                    truncated line, no ``event_id``, a token count as a string,
                                    a negative token count, an unknown ``event_type``,
                                    ``occurred_at`` two days after ``received_at``, no
                                    ``customer_id``.
``unknown_customer``       0.1 %    well-formed, for one of a few customers Stripe does not
                                    know (``unknown_customer_ids`` in the manifest).
=========================  =======  ==========================================================

Event ids are ``evt_<seed in hex>s<YYYYMMDD>h<HH>n<sequence>`` (arrival day and hour of the
first copy): unique within a run, different between seeds. Retries and conflicts are copies of
events sent before (they never arrive before their original); copies that would arrive after the
last generated day are not written. Malformed and unknown-customer lines carry their own
``event_id`` (``<original>_bad<n>``, ``<original>_unk<n>``).

Manifest (``GenerationSummary`` as JSON): the arguments, ``mess`` (the rates used),
``unknown_customer_ids``, ``per_day`` keyed by arrival day and ``totals`` over all days, each
with ``raw_lines``, ``valid_events`` (distinct well-formed events first sent that day: what
ingestion must accept), ``identical_retries``, ``conflicting_duplicates``, ``malformed_lines``,
``malformed_by_kind``, ``unknown_customer_lines``, ``late_events`` (valid events made late on
purpose), ``earlier_day_events`` (valid events whose ``occurred_at`` falls on an earlier UTC day
than their arrival), ``files``, and the expectations for ingestion ``expected_accepted``,
``expected_duplicates``, ``expected_quarantined``. Per day and in total::

    raw_lines = valid_events + identical_retries + conflicting_duplicates
                + malformed_lines + unknown_customer_lines
"""

from __future__ import annotations

import csv
import gzip
import json
from collections import defaultdict
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from io import BytesIO
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from ingestion.stripe_exports import (
    STRIPE_EXPORT_TABLES,
    STRIPE_OPTIONAL_COLUMNS,
    STRIPE_PRICE_EXTRA_COLUMNS,
)
from pricing.periods import billing_period_of
from pricing.price_book import load_price_book
from pricing.stripe_prices import NotExpressibleAtStripe, StripePriceFields, stripe_price_fields

SECOND_MS = 1_000
HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS
ALPHANUMERIC = np.array(list("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"))
ID_LENGTH = 14
EVENT_TYPE = "model_call"
TOOL_CALL = "tool_call"
# When the price book meters tool calls: this share of events are paid tool calls, each tool
# with its popularity and a lognormal cost in cents (median, sigma), at least one cent.
TOOL_CALL_SHARE = 0.02
TOOLS = ("web_search", "sandbox_run", "code_index")
TOOL_WEIGHTS = (0.6, 0.25, 0.15)
TOOL_COST_CENTS = ((1.0, 0.5), (8.0, 0.9), (3.0, 0.7))
MAX_TOOL_COST_MINOR = 100_000
REQUEST_KINDS = ("agent", "chat", "completion", "edit")
REQUEST_KIND_WEIGHTS = (0.45, 0.3, 0.15, 0.1)
# Multiplier of the model's input tokens, and the share of calls that read the prompt cache.
REQUEST_KIND_INPUT_FACTOR = (3.0, 1.0, 0.4, 1.5)
REQUEST_KIND_CACHE_SHARE = (0.75, 0.35, 0.05, 0.5)
# Share of plans by popularity (cheapest first), when the price book has these plans.
PLAN_WEIGHTS = {"starter": 0.45, "pro": 0.3, "team": 0.15, "scale": 0.1}
# Seed of the plan change's own random stream (see _plan_change).
PLAN_CHANGE_STREAM = 0x9C
# A quarter of the customers have a billing-cycle anchor on the day they subscribed (drawn
# from a stream of its own, like the plan change).
ANCHORED_SHARE = 0.25
ANCHOR_STREAM = 0xA7
MODEL_WEIGHTS = {"nimbus-small": 0.5, "nimbus-large": 0.38, "nimbus-reasoning": 0.12}
# Lognormal token counts per model: (input median, input sigma, output median, output sigma).
MODEL_TOKENS = {
    "nimbus-small": (600.0, 1.1, 150.0, 0.9),
    "nimbus-large": (1_500.0, 1.2, 350.0, 1.0),
    "nimbus-reasoning": (2_500.0, 1.1, 1_800.0, 1.0),
}
DEFAULT_MODEL_TOKENS = (1_500.0, 1.2, 350.0, 1.0)
# Normal delay between occurred_at and received_at (the edge's buffering).
MIN_LAG_MS = 50
MAX_LAG_MS = 3_000
MAX_INPUT_TOKENS = 1_000_000
MAX_OUTPUT_TOKENS = 128_000
MAX_CACHE_READ_TOKENS = 4_000_000
# Relative traffic per UTC hour: quiet at night, busiest in the afternoon.
HOURLY_SHAPE = 1.0 + 0.6 * np.sin(2 * np.pi * (np.arange(24) - 9) / 24)
MALFORMED_KINDS = (
    "invalid_json",
    "truncated_line",
    "missing_event_id",
    "token_count_as_string",
    "negative_token_count",
    "unknown_event_type",
    "occurred_at_in_future",
    "missing_customer_id",
)
UNKNOWN_CUSTOMERS = 3
GZIP_LEVEL = 1
USAGE_FILE_NAME = "part-0000.ndjson.gz"
MANIFEST_NAME = "sample_manifest.json"


@dataclass(frozen=True)
class MessRates:
    """How much of the edge's mess to inject; see the module docstring."""

    retry: float = 0.01
    retry_quick_share: float = 0.5
    retry_next_day_share: float = 0.1
    conflict: float = 0.001
    late: float = 0.03
    late_days_share: float = 0.25
    malformed: float = 0.003
    unknown_customer: float = 0.001

    def __post_init__(self) -> None:
        for item in fields(self):
            value = getattr(self, item.name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"MessRates.{item.name} must lie in [0, 1], not {value!r}.")


NO_MESS = MessRates(retry=0.0, conflict=0.0, late=0.0, malformed=0.0, unknown_customer=0.0)


@dataclass
class DayCounts:
    raw_lines: int = 0
    valid_events: int = 0
    identical_retries: int = 0
    conflicting_duplicates: int = 0
    unknown_customer_lines: int = 0
    late_events: int = 0
    earlier_day_events: int = 0
    files: int = 0
    malformed: dict[str, int] = field(default_factory=lambda: dict.fromkeys(MALFORMED_KINDS, 0))

    @property
    def malformed_lines(self) -> int:
        return sum(self.malformed.values())

    def as_manifest(self) -> dict[str, Any]:
        quarantined = (
            self.conflicting_duplicates + self.malformed_lines + self.unknown_customer_lines
        )
        return {
            "raw_lines": self.raw_lines,
            "valid_events": self.valid_events,
            "identical_retries": self.identical_retries,
            "conflicting_duplicates": self.conflicting_duplicates,
            "malformed_lines": self.malformed_lines,
            "malformed_by_kind": dict(self.malformed),
            "unknown_customer_lines": self.unknown_customer_lines,
            "late_events": self.late_events,
            "earlier_day_events": self.earlier_day_events,
            "files": self.files,
            "expected_accepted": self.valid_events,
            "expected_duplicates": self.identical_retries,
            "expected_quarantined": quarantined,
        }


@dataclass(frozen=True)
class GenerationSummary:
    """What was generated; written as JSON to ``raw/sample_manifest.json``."""

    start_date: str
    days: int
    customers: int
    events_per_day: int
    seed: int
    mess: dict[str, float]
    unknown_customer_ids: list[str]
    per_day: dict[str, dict[str, Any]]
    totals: dict[str, Any]
    # Subscriptions changed to another plan mid-range: customer_id, from_plan, to_plan,
    # changed_at (Unix seconds).
    plan_changes: list[dict[str, Any]] = field(default_factory=list)
    # Charges no Stripe price expresses (plan_id, meter_id, reason): no Stripe price or
    # subscription item is written for them; Meterbook rates and posts them.
    charges_without_stripe_price: list[dict[str, str]] = field(default_factory=list)
    # Customers whose subscriptions carry a billing-cycle anchor: the day of the month their
    # billing periods begin on (the others: calendar months).
    billing_anchor_days: dict[str, int] = field(default_factory=dict)


def generate_sample_data(
    output_dir: Path,
    *,
    start_date: date,
    days: int,
    customers: int,
    events_per_day: int,
    seed: int,
    price_book_dir: Path,
    mess: MessRates | None = None,
    raw_dir: Path | None = None,
) -> GenerationSummary:
    """Write ``raw/usage/…``, ``raw/stripe/*.csv`` and ``raw/sample_manifest.json``.

    Usage files exist for arrival days ``start_date`` to ``start_date + days - 1`` only; files
    already there for those hours are overwritten. See the module docstring for the data.
    """
    if days < 1 or customers < 1 or events_per_day < 0:
        raise ValueError(
            "days and customers must be at least 1 and events_per_day at least 0, "
            f"not days={days}, customers={customers}, events_per_day={events_per_day}."
        )
    mess = mess or MessRates()
    rng = np.random.default_rng(seed)
    plans = _read_csv(price_book_dir / "price_book_plans.csv")
    meters = _read_csv(price_book_dir / "price_book_meters.csv")
    meter_prices, without_price = _stripe_meter_prices(price_book_dir)
    population = _make_population(rng, customers, plans, meters)
    plan_change = _plan_change(seed, population, plans, meter_prices, start_date, days)

    raw_dir = raw_dir or output_dir / "raw"
    anchor_days = _write_stripe_exports(
        raw_dir / "stripe",
        rng=rng,
        anchor_rng=np.random.default_rng([seed, ANCHOR_STREAM]),
        population=population,
        plans=plans,
        meters=meters,
        meter_prices=meter_prices,
        plan_change=plan_change,
        start_date=start_date,
        days=days,
    )
    counts = [DayCounts() for _ in range(days)]
    pending: dict[int, list[tuple[int, str]]] = defaultdict(list)  # hour index -> (ms, line)
    writes: list[Future[None]] = []
    with ThreadPoolExecutor(max_workers=1) as writer:
        for day_offset in range(days):
            day = start_date + timedelta(days=day_offset)
            per_hour = rng.multinomial(events_per_day, HOURLY_SHAPE / HOURLY_SHAPE.sum())
            for hour in range(24):
                hour_index = day_offset * 24 + hour
                hour_start = _epoch_ms(day) + hour * HOUR_MS
                frame = _hour_events(
                    rng,
                    count=int(per_hour[hour]),
                    hour_start_ms=hour_start,
                    id_prefix=f"evt_{seed:x}s{day:%Y%m%d}h{hour:02d}n",
                    population=population,
                    mess=mess,
                )
                day_counts = counts[day_offset]
                day_counts.valid_events += frame.height
                day_counts.late_events += int(frame["late"].sum())
                day_counts.earlier_day_events += int((frame["occurred_ms"] < _epoch_ms(day)).sum())
                extra = pending.pop(hour_index, [])
                extra += _mess_for_hour(
                    rng,
                    frame=frame,
                    mess=mess,
                    hour_index=hour_index,
                    hour_start=hour_start,
                    last_hour_index=days * 24 - 1,
                    pending=pending,
                    counts=counts,
                    unknown_ids=population.unknown_ids,
                )
                day_counts.raw_lines += frame.height + len(extra)
                body = _hour_body(frame, extra)
                if body:
                    day_counts.files += 1
                    path = (
                        raw_dir
                        / "usage"
                        / f"date={day.isoformat()}"
                        / f"hour={hour:02d}"
                        / USAGE_FILE_NAME
                    )
                    # Bound the memory: at most one hour compressing while the next is built.
                    while len(writes) > 1:
                        writes.pop(0).result()
                    writes.append(writer.submit(_write_gzip, path, body))
        for write in writes:
            write.result()
    summary = _summary(start_date, days, customers, events_per_day, seed, mess, population, counts)
    if plan_change is not None:
        summary.plan_changes.append(plan_change.as_manifest())
    summary.charges_without_stripe_price.extend(without_price)
    summary.billing_anchor_days.update(anchor_days)
    raw_dir.mkdir(parents=True, exist_ok=True)
    (raw_dir / MANIFEST_NAME).write_text(json.dumps(asdict(summary), indent=2) + "\n")
    return summary


def read_manifest(output_dir: Path, raw_dir: Path | None = None) -> GenerationSummary:
    """The summary a previous run wrote under ``output_dir`` (or its ``raw_dir``)."""
    raw_dir = raw_dir or output_dir / "raw"
    return GenerationSummary(**json.loads((raw_dir / MANIFEST_NAME).read_text()))


# --- customers and events ---------------------------------------------------------------------


@dataclass(frozen=True)
class _Population:
    ids: list[str]
    plans: list[str]
    weights: np.ndarray  # probability of each customer sending an event
    created: np.ndarray  # Unix seconds
    unknown_ids: list[str]
    models: list[str]
    model_weights: np.ndarray
    # Per model: ln(input median), input sigma, ln(output median), output sigma.
    model_tokens: np.ndarray
    # Share of events that are tool calls (0 when the price book meters none).
    tool_call_share: float


def _make_population(
    rng: np.random.Generator,
    count: int,
    plans: list[dict[str, str]],
    meters: list[dict[str, str]],
) -> _Population:
    ids = _random_ids(rng, "cus_", count)
    volume = rng.lognormal(mean=0.0, sigma=1.6, size=count)
    # Heavier customers tend to be on pricier plans: rank a noisy volume score and cut it by the
    # plans' popularity, cheapest plan for the lowest scores.
    plan_ids = _plans_by_fee(plans)
    shares = np.array([PLAN_WEIGHTS.get(p, 1.0 / len(plan_ids)) for p in plan_ids])
    score = np.log(volume) + rng.normal(0.0, 1.0, size=count)
    quantile = (np.argsort(np.argsort(score, kind="stable"), kind="stable") + 0.5) / count
    plan_index = np.searchsorted(np.cumsum(shares / shares.sum()), quantile)
    plan_index = np.minimum(plan_index, len(plan_ids) - 1)
    known = set(ids)
    unknown: list[str] = []
    while len(unknown) < UNKNOWN_CUSTOMERS:
        unknown += [c for c in _random_ids(rng, "cus_", UNKNOWN_CUSTOMERS) if c not in known]
    models = sorted({m["model"] for m in meters if m.get("model")})
    if not models:
        raise ValueError("price_book_meters.csv names no model: there is nothing to generate.")
    model_weights = np.array([MODEL_WEIGHTS.get(m, 0.1) for m in models])
    tokens = np.array([MODEL_TOKENS.get(m, DEFAULT_MODEL_TOKENS) for m in models])
    tokens[:, 0] = np.log(tokens[:, 0])
    tokens[:, 2] = np.log(tokens[:, 2])
    return _Population(
        ids=ids,
        plans=[plan_ids[i] for i in plan_index],
        weights=volume / volume.sum(),
        created=rng.integers(30, 400, size=count),  # days before the start, made absolute later
        unknown_ids=unknown[:UNKNOWN_CUSTOMERS],
        models=models,
        model_weights=model_weights / model_weights.sum(),
        model_tokens=tokens,
        tool_call_share=(
            TOOL_CALL_SHARE if any(m["event_type"] == TOOL_CALL for m in meters) else 0.0
        ),
    )


def _hour_events(
    rng: np.random.Generator,
    *,
    count: int,
    hour_start_ms: int,
    id_prefix: str,
    population: _Population,
    mess: MessRates,
) -> pl.DataFrame:
    """One arrival hour of clean events, sorted by ``received_ms``."""
    received = np.sort(rng.integers(hour_start_ms, hour_start_ms + HOUR_MS, size=count))
    lag = np.clip(rng.lognormal(np.log(300.0), 0.8, size=count), MIN_LAG_MS, MAX_LAG_MS)
    lag = lag.astype(np.int64)
    late = rng.random(count) < mess.late
    late_count = int(late.sum())
    by_days = rng.random(late_count) < mess.late_days_share
    lag[late] = np.where(
        by_days,
        rng.integers(DAY_MS, 3 * DAY_MS, size=late_count),
        rng.integers(HOUR_MS, DAY_MS, size=late_count),
    )
    customer = rng.choice(len(population.ids), size=count, p=population.weights)
    model = rng.choice(len(population.models), size=count, p=population.model_weights)
    kind = rng.choice(len(REQUEST_KINDS), size=count, p=REQUEST_KIND_WEIGHTS)
    params = population.model_tokens[model]
    input_factor = np.log(np.asarray(REQUEST_KIND_INPUT_FACTOR))[kind]
    input_tokens = rng.lognormal(params[:, 0] + input_factor, params[:, 1])
    output_tokens = rng.lognormal(params[:, 2], params[:, 3])
    cached = rng.random(count) < np.asarray(REQUEST_KIND_CACHE_SHARE)[kind]
    cache_read = np.where(cached, input_tokens * rng.lognormal(np.log(2.0), 0.8, size=count), 0)
    # Tool calls take the place of some model calls (no draws when the price book has none).
    is_tool = np.zeros(count, dtype=bool)
    tool = np.zeros(count, dtype=np.int64)
    cost = np.zeros(count, dtype=np.int64)
    if population.tool_call_share:
        is_tool = rng.random(count) < population.tool_call_share
        tool = rng.choice(len(TOOLS), size=count, p=TOOL_WEIGHTS)
        median, sigma = np.asarray(TOOL_COST_CENTS).T
        cost = np.clip(
            np.rint(rng.lognormal(np.log(median[tool]), sigma[tool])), 1, MAX_TOOL_COST_MINOR
        ).astype(np.int64)
    return pl.DataFrame(
        {
            "seq": np.arange(count, dtype=np.int64),
            "customer_id": pl.Series(population.ids).gather(customer),
            "model": pl.Series(population.models).gather(model),
            "request_kind": pl.Series(REQUEST_KINDS).gather(kind),
            "input_tokens": np.clip(input_tokens, 1, MAX_INPUT_TOKENS).astype(np.int64),
            "output_tokens": np.clip(output_tokens, 1, MAX_OUTPUT_TOKENS).astype(np.int64),
            "cache_read_tokens": np.minimum(cache_read, MAX_CACHE_READ_TOKENS).astype(np.int64),
            "received_ms": received,
            "occurred_ms": received - lag,
            "late": late,
            "event_type": np.where(is_tool, TOOL_CALL, EVENT_TYPE),
            "tool": pl.Series(TOOLS).gather(tool),
            "cost_minor": cost,
        }
    ).with_columns(
        pl.concat_str([pl.lit(id_prefix), pl.col("seq").cast(pl.String).str.zfill(7)]).alias(
            "event_id"
        ),
    )


def _format_lines(frame: pl.DataFrame) -> pl.Series:
    """One JSON line per row, keys in the contract's order, as ``json.dumps`` would write it."""

    def ts(column: str) -> pl.Expr:
        return pl.from_epoch(pl.col(column), time_unit="ms").dt.strftime("%Y-%m-%dT%H:%M:%S%.3fZ")

    return frame.select(
        pl.concat_str(
            [
                pl.lit('{"event_id": "'),
                pl.col("event_id"),
                pl.lit('", "customer_id": "'),
                pl.col("customer_id"),
                pl.lit('", "event_type": "'),
                pl.col("event_type"),
                pl.lit('", "occurred_at": "'),
                ts("occurred_ms"),
                pl.lit('", "received_at": "'),
                ts("received_ms"),
                pl.lit('", "properties": {'),
                pl.when(pl.col("event_type") == TOOL_CALL)
                .then(
                    pl.concat_str(
                        [
                            pl.lit('"tool": "'),
                            pl.col("tool"),
                            pl.lit('", "cost_minor": '),
                            pl.col("cost_minor").cast(pl.String),
                        ]
                    )
                )
                .otherwise(
                    pl.concat_str(
                        [
                            pl.lit('"model": "'),
                            pl.col("model"),
                            pl.lit('", "input_tokens": '),
                            pl.col("input_tokens").cast(pl.String),
                            pl.lit(', "output_tokens": '),
                            pl.col("output_tokens").cast(pl.String),
                            pl.lit(', "cache_read_tokens": '),
                            pl.col("cache_read_tokens").cast(pl.String),
                            pl.lit(', "request_kind": "'),
                            pl.col("request_kind"),
                            pl.lit('"'),
                        ]
                    )
                ),
                pl.lit("}}"),
            ]
        ).alias("line")
    )["line"]


# --- the mess ---------------------------------------------------------------------------------


def _mess_for_hour(
    rng: np.random.Generator,
    *,
    frame: pl.DataFrame,
    mess: MessRates,
    hour_index: int,
    hour_start: int,
    last_hour_index: int,
    pending: dict[int, list[tuple[int, str]]],
    counts: list[DayCounts],
    unknown_ids: list[str],
) -> list[tuple[int, str]]:
    """Lines for this hour beyond its clean events; copies for later hours go to ``pending``."""
    count = frame.height
    here: list[tuple[int, str]] = []
    if not count:
        return here
    day_counts = counts[hour_index // 24]

    # Retries and conflicts: copies of this hour's (valid) events, always received later.
    retried = np.flatnonzero(rng.random(count) < mess.retry)
    conflicted = np.flatnonzero(rng.random(count) < mess.conflict)
    for kind, picks in (("retry", retried), ("conflict", conflicted)):
        if not len(picks):
            continue
        quick = rng.random(len(picks)) < mess.retry_quick_share
        delays = np.where(
            quick,
            rng.integers(100, 2 * 60 * SECOND_MS, size=len(picks)),
            rng.integers(2 * 60 * SECOND_MS, 3 * HOUR_MS, size=len(picks)),
        )
        delays += np.where(rng.random(len(picks)) < mess.retry_next_day_share, DAY_MS, 0)
        copies = frame[picks].with_columns(pl.col("received_ms") + pl.Series(delays))
        if kind == "conflict":
            # A different body: more output tokens, or a higher cost for a tool call.
            changes = pl.Series(rng.integers(1, 1_000, size=len(picks)))
            copies = copies.with_columns(
                pl.col("output_tokens") + changes, pl.col("cost_minor") + changes
            )
        received = copies["received_ms"].to_numpy()
        target_hours = hour_index + (received - hour_start) // HOUR_MS
        for received_ms, target_hour, line in zip(
            received.tolist(), target_hours.tolist(), _format_lines(copies).to_list(), strict=True
        ):
            if target_hour > last_hour_index:
                continue  # it would arrive after the generated range
            if target_hour == hour_index:
                here.append((received_ms, line))
            else:
                pending[target_hour].append((received_ms, line))
            target = counts[target_hour // 24]
            if kind == "retry":
                target.identical_retries += 1
            else:
                target.conflicting_duplicates += 1

    # Malformed and unknown-customer lines: their own event ids, based on this hour's events.
    malformed = int(rng.binomial(count, mess.malformed))
    unknown = int(rng.binomial(count, mess.unknown_customer))
    if not malformed + unknown:
        return here
    # Malformed lines break a model call's fields (token counts among them).
    model_calls = frame.filter(pl.col("event_type") == EVENT_TYPE)
    if not model_calls.height:
        return here
    bases = model_calls[rng.integers(0, model_calls.height, size=malformed + unknown)].to_dicts()
    received_at = (hour_start + rng.integers(0, HOUR_MS, size=malformed + unknown)).tolist()
    kinds = rng.integers(0, len(MALFORMED_KINDS), size=malformed).tolist()
    unknown_picks = rng.integers(0, len(unknown_ids), size=unknown).tolist()
    for number, (row, received_ms) in enumerate(zip(bases, received_at, strict=True)):
        event = _event_dict(row, received_ms)
        if number < malformed:
            kind = MALFORMED_KINDS[kinds[number]]
            event["event_id"] = f"{row['event_id']}_bad{number}"
            here.append((received_ms, _malformed_line(kind, event, received_ms)))
            day_counts.malformed[kind] += 1
        else:
            event["event_id"] = f"{row['event_id']}_unk{number - malformed}"
            event["customer_id"] = unknown_ids[unknown_picks[number - malformed]]
            here.append((received_ms, json.dumps(event)))
            day_counts.unknown_customer_lines += 1
    return here


def _event_dict(row: dict[str, Any], received_ms: int) -> dict[str, Any]:
    """An event in the contract's key order, sent 0.5 s before it arrived."""
    return {
        "event_id": row["event_id"],
        "customer_id": row["customer_id"],
        "event_type": row["event_type"],
        "occurred_at": _iso_ms(received_ms - 500),
        "received_at": _iso_ms(received_ms),
        "properties": {
            "model": row["model"],
            "input_tokens": row["input_tokens"],
            "output_tokens": row["output_tokens"],
            "cache_read_tokens": row["cache_read_tokens"],
            "request_kind": row["request_kind"],
        },
    }


def _malformed_line(kind: str, event: dict[str, Any], received_ms: int) -> str:
    line = json.dumps(event)
    if kind == "invalid_json":
        return line.replace('"customer_id": ', '"customer_id" ', 1)
    if kind == "truncated_line":
        return line[: len(line) // 2]
    if kind == "missing_event_id":
        del event["event_id"]
    elif kind == "missing_customer_id":
        del event["customer_id"]
    elif kind == "token_count_as_string":
        event["properties"]["input_tokens"] = str(event["properties"]["input_tokens"])
    elif kind == "negative_token_count":
        event["properties"]["output_tokens"] = -int(event["properties"]["output_tokens"]) - 1
    elif kind == "unknown_event_type":
        event["event_type"] = "page_view"
    elif kind == "occurred_at_in_future":
        event["occurred_at"] = _iso_ms(received_ms + 2 * DAY_MS)
    else:  # pragma: no cover - MALFORMED_KINDS and this function change together
        raise ValueError(f"unknown malformed kind {kind!r}")
    return json.dumps(event)


# --- files ------------------------------------------------------------------------------------


def _hour_body(frame: pl.DataFrame, extra: list[tuple[int, str]]) -> bytes:
    """The hour file's uncompressed bytes: its lines in arrival order, each ending in ``\\n``."""
    lines = pl.DataFrame(
        {"received_ms": frame["received_ms"], "line": _format_lines(frame)},
        schema={"received_ms": pl.Int64, "line": pl.String},
    )
    if extra:
        extra_frame = pl.DataFrame(
            {"received_ms": [ms for ms, _ in extra], "line": [line for _, line in extra]},
            schema={"received_ms": pl.Int64, "line": pl.String},
        )
        lines = pl.concat([lines, extra_frame]).sort("received_ms", maintain_order=True)
    if not lines.height:
        return b""
    buffer = BytesIO()
    lines.select("line").write_csv(buffer, include_header=False, quote_style="never")
    return buffer.getvalue()


def _write_gzip(path: Path, body: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(body, compresslevel=GZIP_LEVEL, mtime=0))


def _summary(
    start_date: date,
    days: int,
    customers: int,
    events_per_day: int,
    seed: int,
    mess: MessRates,
    population: _Population,
    counts: list[DayCounts],
) -> GenerationSummary:
    per_day = {
        (start_date + timedelta(days=offset)).isoformat(): day.as_manifest()
        for offset, day in enumerate(counts)
    }
    totals: dict[str, Any] = {}
    for entry in per_day.values():
        for key, value in entry.items():
            if isinstance(value, dict):
                bucket = totals.setdefault(key, dict.fromkeys(value, 0))
                for kind, number in value.items():
                    bucket[kind] += number
            else:
                totals[key] = totals.get(key, 0) + value
    return GenerationSummary(
        start_date=start_date.isoformat(),
        days=days,
        customers=customers,
        events_per_day=events_per_day,
        seed=seed,
        mess=asdict(mess),
        unknown_customer_ids=list(population.unknown_ids),
        per_day=per_day,
        totals=totals,
    )


# --- Stripe exports ---------------------------------------------------------------------------

# The export layout is the loader's: one definition of Stripe's columns.
STRIPE_COLUMNS: dict[str, tuple[str, ...]] = STRIPE_EXPORT_TABLES
NAME_FIRST = (
    "Acme",
    "Blue",
    "Cobalt",
    "Delta",
    "Ember",
    "Fjord",
    "Granite",
    "Harbor",
    "Iris",
    "Juniper",
    "Kestrel",
    "Lumen",
    "Maple",
    "Nova",
    "Orbit",
    "Pine",
    "Quartz",
    "Rivet",
)
NAME_SECOND = (
    "Analytics",
    "Labs",
    "Systems",
    "Works",
    "Health",
    "Logistics",
    "Studio",
    "Robotics",
    "Finance",
    "Media",
    "Foods",
    "Energy",
    "Legal",
    "Cloud",
)


@dataclass(frozen=True)
class _MeterPrice:
    """One row of ``price_book_charges`` as the Stripe price that bills the same."""

    plan_id: str
    meter_id: str
    currency: str
    fields: StripePriceFields


def _stripe_meter_prices(
    price_book_dir: Path,
) -> tuple[list[_MeterPrice], list[dict[str, str]]]:
    """Every charge of the price book as a Stripe price (docs/pricing.md, What Stripe
    receives), and the charges no Stripe price expresses, with the reason (a percentage
    charge): those get no price, as a real Stripe account would have none for them."""
    prices = []
    without_price: list[dict[str, str]] = []
    for (plan_id, meter_id), dated_charges in load_price_book(price_book_dir).charges.items():
        for dated in dated_charges:
            try:
                fields = stripe_price_fields(dated.charge)
            except NotExpressibleAtStripe as error:
                without_price.append(
                    {"plan_id": plan_id, "meter_id": meter_id, "reason": str(error)}
                )
                continue
            prices.append(_MeterPrice(plan_id, meter_id, dated.currency, fields))
    return prices, without_price


@dataclass(frozen=True)
class PlanChange:
    """A customer's subscription ended at ``changed_at`` (Unix seconds) and one on another plan
    began at the same second: how the exports show a mid-period upgrade or downgrade."""

    customer_id: str
    from_plan: str
    to_plan: str
    changed_at: int
    subscription_id: str  # the new subscription
    item_ids: tuple[str, ...] = field(default=(), compare=False)  # its items, one per price

    def as_manifest(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if k != "item_ids"}


def _plan_change(
    seed: int,
    population: _Population,
    plans: list[dict[str, str]],
    meter_prices: list[_MeterPrice],
    start_date: date,
    days: int,
) -> PlanChange | None:
    """One customer moves to the next dearer plan (the dearest one down a plan), at a random
    second of the middle third of the range. Drawn from a stream of its own, so the rest of the
    data does not depend on it."""
    by_fee = _plans_by_fee(plans)
    if days < 2 or len(by_fee) < 2 or not population.ids:
        return None
    rng = np.random.default_rng([seed, PLAN_CHANGE_STREAM])
    index = int(rng.integers(len(population.ids)))
    from_plan = population.plans[index]
    position = by_fee.index(from_plan)
    to_plan = by_fee[position + 1] if position + 1 < len(by_fee) else by_fee[position - 1]
    day_offset = int(rng.integers(max(1, days // 3), max(2, 2 * days // 3 + 1)))
    changed_at = _epoch_ms(start_date) // 1000 + day_offset * 86_400 + int(rng.integers(86_400))
    items = 1 + sum(price.plan_id == to_plan for price in meter_prices)  # fee + metered
    return PlanChange(
        customer_id=population.ids[index],
        from_plan=from_plan,
        to_plan=to_plan,
        changed_at=changed_at,
        subscription_id=_random_ids(rng, "sub_", 1)[0],
        item_ids=tuple(_random_ids(rng, "si_", items)),
    )


def _write_stripe_exports(
    stripe_dir: Path,
    *,
    rng: np.random.Generator,
    population: _Population,
    plans: list[dict[str, str]],
    meters: list[dict[str, str]],
    meter_prices: list[_MeterPrice],
    plan_change: PlanChange | None,
    start_date: date,
    days: int,
    anchor_rng: np.random.Generator,
) -> dict[str, int]:
    """Stripe objects consistent with the usage and the price book (see docs/architecture.md);
    returns the anchor day of each customer whose subscription has a billing-cycle anchor."""
    stripe_dir.mkdir(parents=True, exist_ok=True)
    start = _epoch_ms(start_date) // 1000
    seconds = rng.integers(0, 86_400, size=len(population.ids))
    customer_created = start - population.created * 86_400 - seconds
    # Products and prices exist before any customer subscribed.
    catalog_created = int(customer_created.min()) - 86_400 if len(population.ids) else start
    last_day = start_date + timedelta(days=days - 1)

    products = [("platform_fee", "Platform fee")] + [
        (m["meter_id"], m["description"] or m["meter_id"]) for m in meters
    ]
    product_ids = dict(
        zip([p for p, _ in products], _random_ids(rng, "prod_", len(products)), strict=True)
    )
    # plan, product (meter), currency, Stripe's price fields, usage type
    price_specs: list[tuple[str, str, str, StripePriceFields, str]] = [
        (
            plan["plan_id"],
            "platform_fee",
            plan["currency"],
            StripePriceFields("per_unit", unit_amount_decimal=plan["monthly_fee_minor"]),
            "licensed",
        )
        for plan in plans
    ]
    price_specs += [
        (price.plan_id, price.meter_id, price.currency, price.fields, "metered")
        for price in meter_prices
    ]
    price_ids = _random_ids(rng, "price_", len(price_specs))
    price_rows: list[list[object]] = []
    prices_by_plan: dict[str, list[str]] = defaultdict(list)
    for price_id, (plan_id, meter_id, currency, fields_, usage_type) in zip(
        price_ids, price_specs, strict=True
    ):
        prices_by_plan[plan_id].append(price_id)
        price_rows.append(
            [
                price_id,
                product_ids[meter_id],
                currency.lower(),
                "" if fields_.unit_amount is None else fields_.unit_amount,
                fields_.unit_amount_decimal or "",
                fields_.billing_scheme,
                "month",
                usage_type,
                f"{plan_id}:{meter_id}",
                "true",
                catalog_created,
                fields_.tiers_mode or "",
                json.dumps(fields_.tiers_as_returned(), sort_keys=True) if fields_.tiers else "",
                json.dumps(fields_.transform_quantity, sort_keys=True)
                if fields_.transform_quantity
                else "",
            ]
        )

    subscription_ids = _random_ids(rng, "sub_", len(population.ids))
    subscription_created = customer_created + rng.integers(60, 3_600, len(population.ids))
    items_per_subscription = [len(prices_by_plan[plan]) for plan in population.plans]
    item_ids = iter(_random_ids(rng, "si_", sum(items_per_subscription)))
    item_rows: list[list[object]] = []
    for subscription_id, plan_id, created in zip(
        subscription_ids, population.plans, subscription_created.tolist(), strict=True
    ):
        for price_id in prices_by_plan[plan_id]:
            item_rows.append([next(item_ids), subscription_id, price_id, 1, created])
    # Some customers are billed from the day they subscribed, as Stripe anchors a subscription
    # by default (here at 00:00 UTC of that day: docs/pricing.md, Billing periods); the others
    # on calendar months (no anchor). Drawn from a generator of their own, so that the rest of
    # the data is what the seed gave before anchors existed.
    anchored = anchor_rng.random(len(population.ids)) < ANCHORED_SHARE
    anchor_days: dict[str, int] = {}
    subscription_rows: list[list[object]] = []
    for sid, cid, plan, created, is_anchored in zip(
        subscription_ids,
        population.ids,
        population.plans,
        subscription_created.tolist(),
        anchored.tolist(),
        strict=True,
    ):
        anchor: int | str = ""
        anchor_day = 1  # calendar months
        if is_anchored:
            anchor = created - created % 86_400
            anchor_day = anchor_days[cid] = datetime.fromtimestamp(anchor, UTC).day
        # The current period: the one holding the last day.
        period = [_epoch_ms(day) // 1000 for day in billing_period_of(last_day, anchor_day)]
        subscription_rows.append(
            [
                sid,
                cid,
                "active",
                "usd",
                created,
                created,
                *period,
                "",
                "",
                json.dumps({"plan_id": plan}),
                anchor,
            ]
        )
    if plan_change is not None:
        _change_plan(plan_change, subscription_rows, item_rows, prices_by_plan)

    names = [
        f"{NAME_FIRST[a]} {NAME_SECOND[b]} {n + 1}"
        for n, (a, b) in enumerate(
            zip(
                rng.integers(0, len(NAME_FIRST), len(population.ids)).tolist(),
                rng.integers(0, len(NAME_SECOND), len(population.ids)).tolist(),
                strict=True,
            )
        )
    ]
    tables: dict[str, list[list[object]]] = {
        "customers": [
            [
                cid,
                f"billing@{name.lower().replace(' ', '-')}.example.com",
                name,
                "usd",
                created,
                "{}",
            ]
            for cid, name, created in zip(
                population.ids, names, customer_created.tolist(), strict=True
            )
        ],
        "products": [
            [product_ids[p], name, "true", catalog_created, json.dumps({"meter_id": p})]
            for p, name in products
        ],
        "prices": price_rows,
        "subscriptions": subscription_rows,
        "subscription_items": item_rows,
    }
    for name, rows in tables.items():
        with (stripe_dir / f"{name}.csv").open("w", newline="") as handle:
            writer = csv.writer(handle, lineterminator="\n")
            writer.writerow(
                STRIPE_COLUMNS[name]
                + STRIPE_OPTIONAL_COLUMNS.get(name, ())
                + (STRIPE_PRICE_EXTRA_COLUMNS if name == "prices" else ())
            )
            writer.writerows(rows)
    return anchor_days


def _change_plan(
    change: PlanChange,
    subscription_rows: list[list[object]],
    item_rows: list[list[object]],
    prices_by_plan: dict[str, list[str]],
) -> None:
    """End the customer's subscription at ``changed_at`` and add one on the new plan from the
    same second, with the same current period and billing-cycle anchor (as Stripe keeps them
    through a plan change)."""
    (old,) = [row for row in subscription_rows if row[1] == change.customer_id]
    old[2] = "canceled"
    old[8] = old[9] = change.changed_at  # canceled_at, ended_at
    subscription_rows.append(
        [
            change.subscription_id,
            change.customer_id,
            "active",
            "usd",
            change.changed_at,
            change.changed_at,
            *old[6:8],  # current_period_start, current_period_end
            "",
            "",
            json.dumps({"plan_id": change.to_plan}),
            old[11],  # billing_cycle_anchor
        ]
    )
    for item_id, price_id in zip(change.item_ids, prices_by_plan[change.to_plan], strict=True):
        item_rows.append([item_id, change.subscription_id, price_id, 1, change.changed_at])


# --- helpers ----------------------------------------------------------------------------------


def _plans_by_fee(plans: list[dict[str, str]]) -> list[str]:
    """Plan ids, cheapest monthly fee first (ties by id)."""
    by_fee = sorted(plans, key=lambda p: (Decimal(p["monthly_fee_minor"]), p["plan_id"]))
    return [p["plan_id"] for p in by_fee]


def _random_ids(rng: np.random.Generator, prefix: str, count: int) -> list[str]:
    letters = rng.choice(ALPHANUMERIC, size=(count, ID_LENGTH))
    return [prefix + "".join(row) for row in letters.tolist()]


def _epoch_ms(day: date) -> int:
    return int(datetime.combine(day, datetime.min.time(), tzinfo=UTC).timestamp()) * 1000


def _iso_ms(epoch_ms: int) -> str:
    moment = datetime.fromtimestamp(epoch_ms // 1000, tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{epoch_ms % 1000:03d}Z"


def _read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))
