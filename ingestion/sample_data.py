"""Deterministic, realistic sample data: raw usage logs with the edge's mess, and Stripe exports.

Same arguments, same bytes (numpy ``default_rng(seed)``, gzip with mtime 0, no clocks). Columns
are generated vectorised with numpy and formatted with polars an hour at a time, so a day of
20 M events never sits in memory whole.

The mess, at the rates of ``MessRates`` (share of a day's events):

- ``retry`` 1 %: the edge sent an event again: same event_id and content, a later
  ``received_at`` (seconds to hours later, sometimes the next day) -> a duplicate;
- ``conflict`` 0.1 %: same event_id, different ``output_tokens``, later -> quarantined;
- ``late`` 3 %: occurred 1 to 72 hours before it arrived -> billed on the day it occurred;
- ``malformed`` 0.3 %: invalid JSON, a truncated line, no event_id, a token count as a string,
  a negative token count, an unknown event_type, ``occurred_at`` days after ``received_at``;
- ``unknown_customer`` 0.1 %: well-formed, for a customer Stripe does not know.

``sample_manifest.json`` records what was injected per arrival day, so that
raw lines = valid events + identical retries + conflicting duplicates + malformed + unknown
customer lines, and ingestion must find exactly those numbers.
"""

from __future__ import annotations

import csv
import gzip
import json
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl

HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS
ALPHANUMERIC = np.array(list("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"))
REQUEST_KINDS = ("agent", "chat", "completion", "edit")
REQUEST_KIND_WEIGHTS = (0.45, 0.3, 0.15, 0.1)
PLAN_WEIGHTS = {"starter": 0.5, "pro": 0.35, "team": 0.15}
MODEL_WEIGHTS = {"nimbus-small": 0.5, "nimbus-large": 0.38, "nimbus-reasoning": 0.12}
MALFORMED_KINDS = (
    "invalid_json",
    "truncated_line",
    "missing_event_id",
    "token_count_as_string",
    "negative_token_count",
    "unknown_event_type",
    "occurred_at_in_future",
)
GZIP_LEVEL = 3


@dataclass(frozen=True)
class MessRates:
    retry: float = 0.01
    conflict: float = 0.001
    late: float = 0.03
    malformed: float = 0.003
    unknown_customer: float = 0.001


@dataclass
class DayCounts:
    raw_lines: int = 0
    valid_events: int = 0
    identical_retries: int = 0
    conflicting_duplicates: int = 0
    late_events: int = 0
    unknown_customer_lines: int = 0
    malformed: dict[str, int] = field(default_factory=lambda: dict.fromkeys(MALFORMED_KINDS, 0))

    @property
    def malformed_lines(self) -> int:
        return sum(self.malformed.values())


@dataclass(frozen=True)
class GenerationSummary:
    start_date: str
    days: int
    customers: int
    events_per_day: int
    seed: int
    mess: dict[str, float]
    per_day: dict[str, dict[str, object]]
    totals: dict[str, int]


def _random_ids(rng: np.random.Generator, prefix: str, count: int, length: int = 14) -> list[str]:
    letters = rng.choice(ALPHANUMERIC, size=(count, length))
    return [prefix + "".join(row) for row in letters]


def _epoch_ms(day: date) -> int:
    return int(datetime.combine(day, datetime.min.time(), tzinfo=UTC).timestamp() * 1000)


def _read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


@dataclass(frozen=True)
class _Customers:
    ids: list[str]
    plans: list[str]
    weights: np.ndarray


def _make_customers(rng: np.random.Generator, count: int, plan_ids: list[str]) -> _Customers:
    ids = _random_ids(rng, "cus_", count)
    known = [p for p in PLAN_WEIGHTS if p in plan_ids] or plan_ids
    probabilities = np.array([PLAN_WEIGHTS.get(p, 1.0) for p in known])
    plans = list(rng.choice(known, size=count, p=probabilities / probabilities.sum()))
    weights = rng.lognormal(mean=0.0, sigma=1.5, size=count)
    return _Customers(ids=ids, plans=[str(p) for p in plans], weights=weights / weights.sum())


def _format_lines(frame: pl.DataFrame) -> pl.Series:
    """One JSON line per row, keys in the contract's order."""

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
                pl.lit('", "properties": {"model": "'),
                pl.col("model"),
                pl.lit('", "input_tokens": '),
                pl.col("input_tokens").cast(pl.String),
                pl.lit(', "output_tokens": '),
                pl.col("output_tokens").cast(pl.String),
                pl.lit(', "cache_read_tokens": '),
                pl.col("cache_read_tokens").cast(pl.String),
                pl.lit(', "request_kind": "'),
                pl.col("request_kind"),
                pl.lit('"}}'),
            ]
        ).alias("line")
    )["line"]


def _hour_events(
    rng: np.random.Generator,
    *,
    count: int,
    hour_start_ms: int,
    id_prefix: str,
    customers: _Customers,
    models: list[str],
    model_weights: np.ndarray,
    late_rate: float,
) -> tuple[pl.DataFrame, int]:
    received = np.sort(rng.integers(hour_start_ms, hour_start_ms + HOUR_MS, size=count))
    lag = rng.integers(50, 3_000, size=count)
    late = rng.random(count) < late_rate
    lag = np.where(late, rng.integers(HOUR_MS, 72 * HOUR_MS, size=count), lag)
    cache_used = rng.random(count) < 0.4
    frame = pl.DataFrame(
        {
            "seq": np.arange(count),
            "customer_id": np.array(customers.ids)[
                rng.choice(len(customers.ids), size=count, p=customers.weights)
            ],
            "model": np.array(models)[rng.choice(len(models), size=count, p=model_weights)],
            "request_kind": np.array(REQUEST_KINDS)[
                rng.choice(len(REQUEST_KINDS), size=count, p=REQUEST_KIND_WEIGHTS)
            ],
            "input_tokens": np.minimum(rng.lognormal(7.5, 1.2, size=count), 2_000_000).astype(
                np.int64
            ),
            "output_tokens": np.minimum(rng.lognormal(5.8, 1.0, size=count), 200_000).astype(
                np.int64
            ),
            "cache_read_tokens": np.where(
                cache_used, np.minimum(rng.lognormal(8.5, 1.3, size=count), 5_000_000), 0
            ).astype(np.int64),
            "received_ms": received,
            "occurred_ms": received - lag,
        }
    ).with_columns(
        pl.concat_str([pl.lit(id_prefix), pl.col("seq").cast(pl.String).str.zfill(7)]).alias(
            "event_id"
        ),
        pl.lit("model_call").alias("event_type"),
    )
    return frame, int(late.sum())


def _malformed_line(kind: str, event: dict[str, object]) -> str:
    line = json.dumps(event)
    if kind == "invalid_json":
        return line.replace('"customer_id": ', '"customer_id" ', 1)
    if kind == "truncated_line":
        return line[: len(line) // 2]
    if kind == "missing_event_id":
        event = {k: v for k, v in event.items() if k != "event_id"}
    elif kind == "token_count_as_string":
        event["properties"]["input_tokens"] = str(event["properties"]["input_tokens"])  # type: ignore[index]
    elif kind == "negative_token_count":
        event["properties"]["output_tokens"] = -abs(int(event["properties"]["output_tokens"]) + 1)  # type: ignore[index,call-overload]
    elif kind == "unknown_event_type":
        event["event_type"] = "page_view"
    elif kind == "occurred_at_in_future":
        received = datetime.fromisoformat(str(event["received_at"]).replace("Z", "+00:00"))
        event["occurred_at"] = (received + timedelta(days=2)).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    return json.dumps(event)


def _iso_ms(epoch_ms: int) -> str:
    moment = datetime.fromtimestamp(epoch_ms / 1000, tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{epoch_ms % 1000:03d}Z"


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
) -> GenerationSummary:
    """Write ``raw/usage/…`` and ``raw/stripe/*.csv`` under ``output_dir``; see the module doc."""
    mess = mess or MessRates()
    rng = np.random.default_rng(seed)
    plans = _read_csv(price_book_dir / "price_book_plans.csv")
    meters = _read_csv(price_book_dir / "price_book_meters.csv")
    prices = _read_csv(price_book_dir / "price_book_meter_prices.csv")
    models = sorted({m["model"] for m in meters})
    raw_weights = np.array([MODEL_WEIGHTS.get(m, 0.1) for m in models])
    model_weights = raw_weights / raw_weights.sum()
    customer_set = _make_customers(rng, customers, [p["plan_id"] for p in plans])
    unknown_ids = _random_ids(rng, "cus_", 5)

    raw_dir = output_dir / "raw"
    _write_stripe_exports(
        raw_dir / "stripe",
        rng=rng,
        customers=customer_set,
        plans=plans,
        meters=meters,
        prices=prices,
        start_date=start_date,
    )
    usage_dir = raw_dir / "usage"
    counts: dict[date, DayCounts] = defaultdict(DayCounts)
    pending: dict[int, list[tuple[int, str]]] = defaultdict(list)  # hour index -> (ms, line)
    last_day = start_date + timedelta(days=days - 1)
    for day_offset in range(days):
        day = start_date + timedelta(days=day_offset)
        day_start = _epoch_ms(day)
        per_hour = np.bincount(rng.integers(0, 24, size=events_per_day), minlength=24)
        for hour in range(24):
            hour_index = day_offset * 24 + hour
            hour_start = day_start + hour * HOUR_MS
            frame, late = _hour_events(
                rng,
                count=int(per_hour[hour]),
                hour_start_ms=hour_start,
                id_prefix=f"evt_{seed:x}{day:%Y%m%d}{hour:02d}",
                customers=customer_set,
                models=models,
                model_weights=model_weights,
                late_rate=mess.late,
            )
            day_counts = counts[day]
            day_counts.valid_events += frame.height
            day_counts.late_events += late
            lines = _format_lines(frame)
            extra: list[tuple[int, str]] = pending.pop(hour_index, [])
            extra += _mess_for_hour(
                rng,
                frame=frame,
                mess=mess,
                hour_index=hour_index,
                hour_start=hour_start,
                last_hour_index=days * 24 - 1,
                pending=pending,
                counts=counts,
                start_date=start_date,
                unknown_ids=unknown_ids,
            )
            _write_hour(usage_dir, day, hour, frame["received_ms"].to_numpy(), lines, extra)
            day_counts.raw_lines += frame.height + len(extra)
    summary = _summary(start_date, days, customers, events_per_day, seed, mess, counts, last_day)
    (raw_dir / "sample_manifest.json").write_text(json.dumps(asdict(summary), indent=2))
    return summary


def _mess_for_hour(
    rng: np.random.Generator,
    *,
    frame: pl.DataFrame,
    mess: MessRates,
    hour_index: int,
    hour_start: int,
    last_hour_index: int,
    pending: dict[int, list[tuple[int, str]]],
    counts: dict[date, DayCounts],
    start_date: date,
    unknown_ids: list[str],
) -> list[tuple[int, str]]:
    """Lines for this hour beyond its clean events; later retries are queued in ``pending``."""
    count = frame.height
    here: list[tuple[int, str]] = []

    def place(target_hour: int, received_ms: int, line: str, kind: str) -> None:
        target_day = start_date + timedelta(days=target_hour // 24)
        if target_hour == hour_index:
            here.append((received_ms, line))
        else:
            pending[target_hour].append((received_ms, line))
        if kind == "retry":
            counts[target_day].identical_retries += 1
        else:
            counts[target_day].conflicting_duplicates += 1

    def event_dict(row: dict[str, object], received_ms: int) -> dict[str, object]:
        return {
            "event_id": row["event_id"],
            "customer_id": row["customer_id"],
            "event_type": row["event_type"],
            "occurred_at": _iso_ms(int(row["occurred_ms"])),  # type: ignore[call-overload]
            "received_at": _iso_ms(received_ms),
            "properties": {
                "model": row["model"],
                "input_tokens": row["input_tokens"],
                "output_tokens": row["output_tokens"],
                "cache_read_tokens": row["cache_read_tokens"],
                "request_kind": row["request_kind"],
            },
        }

    day_start = hour_start - (hour_index % 24) * HOUR_MS
    for kind, rate in (("retry", mess.retry), ("conflict", mess.conflict)):
        picks = np.flatnonzero(rng.random(count) < rate)
        if not len(picks):
            continue
        delays = rng.integers(1_000, 3 * HOUR_MS, size=len(picks))
        delays = np.where(rng.random(len(picks)) < 0.1, delays + DAY_MS, delays)
        copies = frame[picks].with_columns(pl.col("received_ms") + pl.Series(delays))
        if kind == "conflict":
            changes = pl.Series(rng.integers(1, 1000, size=len(picks)))
            copies = copies.with_columns(pl.col("output_tokens") + changes)
        received = copies["received_ms"].to_numpy()
        target_hours = (received - day_start) // HOUR_MS + (hour_index - hour_index % 24)
        lines = _format_lines(copies).to_list()
        for received_ms, target_hour, line in zip(
            received.tolist(), target_hours.tolist(), lines, strict=True
        ):
            if target_hour <= last_hour_index:
                place(int(target_hour), int(received_ms), line, kind)

    day = start_date + timedelta(days=hour_index // 24)
    malformed = int(rng.binomial(count, mess.malformed)) if count else 0
    for number in range(malformed):
        kind = MALFORMED_KINDS[int(rng.integers(0, len(MALFORMED_KINDS)))]
        row = frame.row(int(rng.integers(0, count)), named=True)
        received_ms = hour_start + int(rng.integers(0, HOUR_MS))
        event = event_dict(row, received_ms)
        event["event_id"] = f"{row['event_id']}_bad{number}"
        event["occurred_at"] = _iso_ms(received_ms - 500)
        here.append((received_ms, _malformed_line(kind, event)))
        counts[day].malformed[kind] += 1
    unknown = int(rng.binomial(count, mess.unknown_customer)) if count else 0
    for number in range(unknown):
        row = frame.row(int(rng.integers(0, count)), named=True)
        received_ms = hour_start + int(rng.integers(0, HOUR_MS))
        event = event_dict(row, received_ms)
        event["event_id"] = f"{row['event_id']}_unk{number}"
        event["customer_id"] = unknown_ids[number % len(unknown_ids)]
        event["occurred_at"] = _iso_ms(received_ms - 500)
        here.append((received_ms, json.dumps(event)))
        counts[day].unknown_customer_lines += 1
    return here


def _write_hour(
    usage_dir: Path,
    day: date,
    hour: int,
    received: np.ndarray,
    lines: pl.Series,
    extra: list[tuple[int, str]],
) -> None:
    if not len(lines) and not extra:
        return
    if extra:
        extra_frame = pl.DataFrame(
            {"received_ms": [ms for ms, _ in extra], "line": [line for _, line in extra]},
            schema={"received_ms": pl.Int64, "line": pl.String},
        )
        combined = pl.concat(
            [pl.DataFrame({"received_ms": received, "line": lines}), extra_frame]
        ).sort("received_ms", maintain_order=True)
        lines = combined["line"]
    folder = usage_dir / f"date={day.isoformat()}" / f"hour={hour:02d}"
    folder.mkdir(parents=True, exist_ok=True)
    body = ("\n".join(lines.to_list()) + "\n").encode()
    with (
        (folder / "part-0000.ndjson.gz").open("wb") as raw,
        gzip.GzipFile(
            fileobj=raw, mode="wb", compresslevel=GZIP_LEVEL, mtime=0, filename=""
        ) as handle,
    ):
        handle.write(body)


def _summary(
    start_date: date,
    days: int,
    customers: int,
    events_per_day: int,
    seed: int,
    mess: MessRates,
    counts: dict[date, DayCounts],
    last_day: date,
) -> GenerationSummary:
    per_day: dict[str, dict[str, object]] = {}
    totals: dict[str, int] = defaultdict(int)
    for day in sorted(counts):
        if day > last_day:
            continue
        c = counts[day]
        entry: dict[str, object] = {
            "raw_lines": c.raw_lines,
            "valid_events": c.valid_events,
            "identical_retries": c.identical_retries,
            "conflicting_duplicates": c.conflicting_duplicates,
            "late_events": c.late_events,
            "malformed_lines": c.malformed_lines,
            "malformed_by_kind": dict(c.malformed),
            "unknown_customer_lines": c.unknown_customer_lines,
            "expected_accepted": c.valid_events,
            "expected_duplicates": c.identical_retries,
            "expected_quarantined": c.conflicting_duplicates
            + c.malformed_lines
            + c.unknown_customer_lines,
        }
        per_day[day.isoformat()] = entry
        for key, value in entry.items():
            if isinstance(value, int):
                totals[key] += value
    return GenerationSummary(
        start_date=start_date.isoformat(),
        days=days,
        customers=customers,
        events_per_day=events_per_day,
        seed=seed,
        mess=asdict(mess),
        per_day=per_day,
        totals=dict(totals),
    )


def _write_stripe_exports(
    stripe_dir: Path,
    *,
    rng: np.random.Generator,
    customers: _Customers,
    plans: list[dict[str, str]],
    meters: list[dict[str, str]],
    prices: list[dict[str, str]],
    start_date: date,
) -> None:
    """Stripe objects consistent with the usage and the price book (see docs/architecture.md)."""
    stripe_dir.mkdir(parents=True, exist_ok=True)
    created = int(_epoch_ms(start_date - timedelta(days=45)) / 1000)
    period_start = int(_epoch_ms(start_date.replace(day=1)) / 1000)
    next_month = (start_date.replace(day=28) + timedelta(days=4)).replace(day=1)
    period_end = int(_epoch_ms(next_month) / 1000)
    products = [("platform_fee", "Platform fee")] + [
        (m["meter_id"], m["description"]) for m in meters
    ]
    product_ids = dict(
        zip([p for p, _ in products], _random_ids(rng, "prod_", len(products)), strict=True)
    )
    price_rows: list[list[object]] = []
    price_ids: dict[tuple[str, str], str] = {}
    for plan in plans:
        fee_id = _random_ids(rng, "price_", 1)[0]
        price_ids[(plan["plan_id"], "platform_fee")] = fee_id
        price_rows.append(
            [
                fee_id,
                product_ids["platform_fee"],
                plan["currency"],
                plan["monthly_fee_minor"],
                plan["monthly_fee_minor"],
                "per_unit",
                "month",
                "licensed",
                f"{plan['plan_id']}:platform_fee",
                "true",
                created,
            ]
        )
    for price in prices:
        price_id = _random_ids(rng, "price_", 1)[0]
        price_ids[(price["plan_id"], price["meter_id"])] = price_id
        price_rows.append(
            [
                price_id,
                product_ids[price["meter_id"]],
                price["currency"],
                "",
                price["unit_price_minor"],
                "per_unit",
                "month",
                "metered",
                f"{price['plan_id']}:{price['meter_id']}",
                "true",
                created,
            ]
        )
    subscription_ids = _random_ids(rng, "sub_", len(customers.ids))
    item_rows: list[list[object]] = []
    for subscription_id, plan_id in zip(subscription_ids, customers.plans, strict=True):
        for (price_plan, _), price_id in price_ids.items():
            if price_plan == plan_id:
                item_rows.append(
                    [_random_ids(rng, "si_", 1)[0], subscription_id, price_id, 1, created]
                )
    tables: dict[str, tuple[list[str], list[list[object]]]] = {
        "customers": (
            ["id", "email", "name", "currency", "created", "metadata"],
            [
                [cid, f"billing+{n}@example.com", f"Customer {n}", "usd", created, "{}"]
                for n, cid in enumerate(customers.ids)
            ],
        ),
        "products": (
            ["id", "name", "active", "created", "metadata"],
            [
                [product_ids[p], name, "true", created, json.dumps({"meter_id": p})]
                for p, name in products
            ],
        ),
        "prices": (
            [
                "id",
                "product",
                "currency",
                "unit_amount",
                "unit_amount_decimal",
                "billing_scheme",
                "recurring_interval",
                "recurring_usage_type",
                "lookup_key",
                "active",
                "created",
            ],
            price_rows,
        ),
        "subscriptions": (
            [
                "id",
                "customer",
                "status",
                "currency",
                "created",
                "start_date",
                "current_period_start",
                "current_period_end",
                "canceled_at",
                "ended_at",
                "metadata",
            ],
            [
                [
                    sid,
                    cid,
                    "active",
                    "usd",
                    created,
                    created,
                    period_start,
                    period_end,
                    "",
                    "",
                    json.dumps({"plan_id": plan}),
                ]
                for sid, cid, plan in zip(
                    subscription_ids, customers.ids, customers.plans, strict=True
                )
            ],
        ),
        "subscription_items": (["id", "subscription", "price", "quantity", "created"], item_rows),
    }
    for name, (header, rows) in tables.items():
        with (stripe_dir / f"{name}.csv").open("w", newline="") as handle:
            writer = csv.writer(handle, lineterminator="\n")
            writer.writerow(header)
            writer.writerows(rows)
