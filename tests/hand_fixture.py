"""A tiny, hand-computed billing case: every figure in the expectations is worked out by hand.

Two customers on two plans, two arrival days, and the mess the edge produces: an edge retry, a
conflicting duplicate, a late event, a malformed line and an unknown customer. Prices are the
price book's (dbt_project/seeds): Pro pays 0.9 × the list price, Starter the list price.
"""

from __future__ import annotations

import csv
import gzip
import json
from decimal import Decimal
from pathlib import Path

from ingestion.stripe_exports import STRIPE_EXPORT_TABLES

ALPHA = "cus_alpha0000000001"  # Pro plan, nimbus-large
BETA = "cus_beta00000000002"  # Starter plan, nimbus-small
GHOST = "cus_ghost0000000009"  # not a Stripe customer


def _event(
    event_id: str,
    customer_id: str,
    model: str,
    occurred_at: str,
    received_at: str,
    tokens: tuple[int, int, int],
) -> str:
    return json.dumps(
        {
            "event_id": event_id,
            "customer_id": customer_id,
            "event_type": "model_call",
            "occurred_at": occurred_at,
            "received_at": received_at,
            "properties": {
                "model": model,
                "input_tokens": tokens[0],
                "output_tokens": tokens[1],
                "cache_read_tokens": tokens[2],
                "request_kind": "agent",
            },
        }
    )


DAY_1_LINES = [
    _event(
        "evt_a1",
        ALPHA,
        "nimbus-large",
        "2026-10-01T10:00:00.000Z",
        "2026-10-01T10:00:01.000Z",
        (120_000, 30_000, 0),
    ),
    # The edge retried evt_a1: same content, later arrival -> duplicate.
    _event(
        "evt_a1",
        ALPHA,
        "nimbus-large",
        "2026-10-01T10:00:00.000Z",
        "2026-10-01T10:00:09.000Z",
        (120_000, 30_000, 0),
    ),
    _event(
        "evt_b1",
        BETA,
        "nimbus-small",
        "2026-10-01T10:05:00.000Z",
        "2026-10-01T10:05:00.500Z",
        (500_000, 100_000, 200_000),
    ),
    '{"event_id": "evt_bad", "customer_id": ',
    _event(
        "evt_x1",
        GHOST,
        "nimbus-small",
        "2026-10-01T10:06:00.000Z",
        "2026-10-01T10:06:00.100Z",
        (10, 10, 10),
    ),
]

DAY_2_LINES = [
    # Late: occurred on 1 October, arrived on 2 October -> billed on 1 October.
    _event(
        "evt_a2",
        ALPHA,
        "nimbus-large",
        "2026-10-01T23:00:00.000Z",
        "2026-10-02T09:00:00.000Z",
        (250_000, 0, 400_000),
    ),
    # Same id as evt_b1, different content -> conflict, quarantined, never billed.
    _event(
        "evt_b1",
        BETA,
        "nimbus-small",
        "2026-10-01T10:05:00.000Z",
        "2026-10-02T09:01:00.000Z",
        (500_000, 999, 200_000),
    ),
    _event(
        "evt_b2",
        BETA,
        "nimbus-small",
        "2026-10-02T08:00:00.000Z",
        "2026-10-02T09:02:00.000Z",
        (10_000, 10_000, 0),
    ),
]

EXPECTED_COUNTS = {"raw": 8, "accepted": 4, "duplicates": 1, "quarantined": 3}
EXPECTED_QUARANTINE_REASONS = {
    "invalid_json": 1,
    "unknown_customer": 1,
    "conflicting_duplicate": 1,
}

# billable_usage_daily.amount_minor_exact (cents), by hand:
#   alpha 1 Oct, Pro nimbus-large: requests 2 x 0.09 = 0.18; input 370,000 x 0.00027 = 99.9;
#     output 30,000 x 0.00135 = 40.5; cache 400,000 x 0.000027 = 10.8
#   beta 1 Oct, Starter nimbus-small: requests 1 x 0.05; input 500,000 x 0.000025 = 12.5;
#     output 100,000 x 0.000125 = 12.5; cache 200,000 x 0.000003 = 0.6
#   beta 2 Oct: requests 0.05; input 10,000 x 0.000025 = 0.25; output 10,000 x 0.000125 = 1.25;
#     cache 0
EXPECTED_DAILY_AMOUNTS = {
    (ALPHA, "nimbus_large__requests", "2026-10-01"): Decimal("0.18"),
    (ALPHA, "nimbus_large__input_tokens", "2026-10-01"): Decimal("99.9"),
    (ALPHA, "nimbus_large__output_tokens", "2026-10-01"): Decimal("40.5"),
    (ALPHA, "nimbus_large__cache_read_tokens", "2026-10-01"): Decimal("10.8"),
    (BETA, "nimbus_small__requests", "2026-10-01"): Decimal("0.05"),
    (BETA, "nimbus_small__input_tokens", "2026-10-01"): Decimal("12.5"),
    (BETA, "nimbus_small__output_tokens", "2026-10-01"): Decimal("12.5"),
    (BETA, "nimbus_small__cache_read_tokens", "2026-10-01"): Decimal("0.6"),
    (BETA, "nimbus_small__requests", "2026-10-02"): Decimal("0.05"),
    (BETA, "nimbus_small__input_tokens", "2026-10-02"): Decimal("0.25"),
    (BETA, "nimbus_small__output_tokens", "2026-10-02"): Decimal("1.25"),
    (BETA, "nimbus_small__cache_read_tokens", "2026-10-02"): Decimal("0"),
}
# invoice_lines.amount_minor for October, rounded once per line, half away from zero:
#   alpha: 0.18 -> 0, 99.9 -> 100, 40.5 -> 41, 10.8 -> 11 = 152 of usage, and Pro's flat fee
#   of 2,000 (subscribed since September 2025, billed in advance for the whole month) = 2,152
#   beta: 0.10 -> 0, 12.75 -> 13, 13.75 -> 14, 0.6 -> 1 = 28 (Starter has no fee)
EXPECTED_INVOICE_TOTALS = {ALPHA: 2152, BETA: 28}
# Ledger: usage revenue = the exact daily sums (no rounding before the invoice); subscription
# revenue = the fee lines as invoiced; the unbilled receivable holds both.
EXPECTED_USAGE_REVENUE = {ALPHA: Decimal("151.38"), BETA: Decimal("27.20")}
EXPECTED_FEES = {ALPHA: Decimal("2000"), BETA: Decimal("0")}
EXPECTED_RECEIVABLE = {ALPHA: Decimal("2151.38"), BETA: Decimal("27.20")}
# Day 1 posts/sends 7 slot revisions (alpha: requests, input, output; beta: 4 meters) and
# alpha's October fee; day 2 brings 3 changes to alpha's 1 October (requests r2, input r2,
# cache r1) and 3 new beta slots.
EXPECTED_LEDGER_TRANSACTIONS = 14
EXPECTED_METER_EVENTS = 13


def write_hand_fixture(data_dir: Path) -> None:
    """Write the raw usage files and the Stripe exports under ``data_dir/raw``."""
    usage = data_dir / "raw" / "usage"
    for day, hour, lines in (("2026-10-01", "10", DAY_1_LINES), ("2026-10-02", "09", DAY_2_LINES)):
        folder = usage / f"date={day}" / f"hour={hour}"
        folder.mkdir(parents=True, exist_ok=True)
        with gzip.open(folder / "part-0000.ndjson.gz", "wt", encoding="utf-8") as handle:
            handle.write("\n".join(lines) + "\n")
    stripe_dir = data_dir / "raw" / "stripe"
    stripe_dir.mkdir(parents=True, exist_ok=True)
    created = "1756684800"  # 2025-09-01
    tables = {
        "customers": (
            STRIPE_EXPORT_TABLES["customers"],
            [
                [ALPHA, "alpha@example.com", "Alpha", "usd", created, "{}"],
                [BETA, "beta@example.com", "Beta", "usd", created, "{}"],
            ],
        ),
        "products": (
            STRIPE_EXPORT_TABLES["products"],
            [["prod_usage0000000001", "Model usage", "true", created, "{}"]],
        ),
        "prices": (
            STRIPE_EXPORT_TABLES["prices"],
            [
                [
                    "price_pro_fee0000001",
                    "prod_usage0000000001",
                    "usd",
                    "2000",
                    "2000",
                    "per_unit",
                    "month",
                    "licensed",
                    "pro:platform_fee",
                    "true",
                    created,
                ]
            ],
        ),
        "subscriptions": (
            STRIPE_EXPORT_TABLES["subscriptions"],
            [
                [
                    "sub_alpha0000000001",
                    ALPHA,
                    "active",
                    "usd",
                    created,
                    created,
                    "1790812800",
                    "1793491200",
                    "",
                    "",
                    '{"plan_id": "pro"}',
                ],
                [
                    "sub_beta00000000002",
                    BETA,
                    "active",
                    "usd",
                    created,
                    created,
                    "1790812800",
                    "1793491200",
                    "",
                    "",
                    '{"plan_id": "starter"}',
                ],
            ],
        ),
        "subscription_items": (
            STRIPE_EXPORT_TABLES["subscription_items"],
            [["si_alpha00000000001", "sub_alpha0000000001", "price_pro_fee0000001", "1", created]],
        ),
    }
    for name, (header, rows) in tables.items():
        with open(stripe_dir / f"{name}.csv", "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(header)
            writer.writerows(rows)
