"""Pull the catalogue from the configured Stripe into the raw layer, as the exports contract says.

Customers, products, prices, subscriptions and subscription items (and, for reconciliation,
invoices and their line items) are listed through the API
(every page, via the client's auto-pagination) and written as ``<table>.csv`` with Stripe's field
names, the same files a Stripe export gives, so the ``stripe_exports`` asset loads either. Prices
also carry ``tiers_mode``, ``tiers`` and ``transform_quantity`` (JSON), Stripe's fields for
tiered and package prices. Files are
written beside the old ones and renamed over them, so a failed pull leaves the last good set.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterable, Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any

import stripe

from ingestion.stripe_exports import (
    STRIPE_EXPORT_TABLES,
    STRIPE_INVOICE_TABLES,
    STRIPE_OPTIONAL_COLUMNS,
    STRIPE_PRICE_EXTRA_COLUMNS,
)

PAGE_SIZE = 100


def _value(obj: dict[str, Any], name: str) -> str:
    """A field as an export writes it: text, with booleans lower-case and hashes as JSON."""
    value = obj.get(name)
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True, default=str)
    if isinstance(value, Decimal):
        return format(value, "f")  # Stripe's decimal strings, never exponent notation
    return str(value)


def _price_row(price_object: stripe.Price) -> dict[str, str]:
    price = price_object.to_dict()
    recurring = price.get("recurring") or {}
    row = {column: _value(price, column) for column in STRIPE_EXPORT_TABLES["prices"]}
    row["recurring_interval"] = str(recurring.get("interval") or "")
    row["recurring_usage_type"] = str(recurring.get("usage_type") or "")
    row["tiers_mode"] = _value(price, "tiers_mode")
    tiers = price.get("tiers")
    row["tiers"] = json.dumps(tiers, sort_keys=True, default=str) if tiers else ""
    row["transform_quantity"] = _value(price, "transform_quantity")
    return row


def _line_row(invoice_id: str, line: dict[str, Any]) -> dict[str, str]:
    """An invoice line as the export writes it. Newer API versions nest the price and the
    subscription item (``pricing.price_details``, ``parent.subscription_item_details``); older
    ones have them at the top: both are read."""
    pricing = (line.get("pricing") or {}).get("price_details") or {}
    parent = (line.get("parent") or {}).get("subscription_item_details") or {}
    price = line.get("price") or pricing.get("price") or ""
    period = line.get("period") or {}
    return {
        "id": _value(line, "id"),
        "invoice": invoice_id,
        "subscription_item": str(
            line.get("subscription_item") or parent.get("subscription_item") or ""
        ),
        "price": str(price.get("id") if isinstance(price, dict) else price),
        "quantity": _value(line, "quantity"),
        "amount": _value(line, "amount"),
        "currency": _value(line, "currency"),
        "period_start": str(period.get("start") or ""),
        "period_end": str(period.get("end") or ""),
    }


def subscription_period(subscription: Mapping[str, Any]) -> tuple[int | None, int | None]:
    """A subscription's current period (start, end) in Unix seconds. API versions since
    2025-03-31 keep it on each subscription item (items may differ: the subscription's period
    spans them all); older versions on the subscription itself."""
    items = (subscription.get("items") or {}).get("data") or []
    starts = [int(i["current_period_start"]) for i in items if i.get("current_period_start")]
    ends = [int(i["current_period_end"]) for i in items if i.get("current_period_end")]
    start = subscription.get("current_period_start") or (min(starts) if starts else None)
    end = subscription.get("current_period_end") or (max(ends) if ends else None)
    return (int(start) if start else None, int(end) if end else None)


def _subscription_row(subscription: dict[str, Any]) -> dict[str, str]:
    start, end = subscription_period(subscription)
    with_period = subscription | {"current_period_start": start, "current_period_end": end}
    columns = STRIPE_EXPORT_TABLES["subscriptions"] + STRIPE_OPTIONAL_COLUMNS["subscriptions"]
    return {column: _value(with_period, column) for column in columns}


def _rows(objects: Iterable[Any], columns: tuple[str, ...]) -> list[dict[str, str]]:
    return [{column: _value(obj.to_dict(), column) for column in columns} for obj in objects]


def pull_catalog(client: stripe.StripeClient, stripe_dir: Path) -> dict[str, int]:
    """List everything and replace the CSV files; returns rows per table."""
    page = {"limit": PAGE_SIZE}
    v1 = client.v1
    subscriptions = list(v1.subscriptions.list(params={**page, "status": "all"}).auto_paging_iter())
    tables: dict[str, list[dict[str, str]]] = {
        "customers": _rows(
            v1.customers.list(params=page).auto_paging_iter(), STRIPE_EXPORT_TABLES["customers"]
        ),
        "products": _rows(
            v1.products.list(params=page).auto_paging_iter(), STRIPE_EXPORT_TABLES["products"]
        ),
        "prices": [_price_row(p) for p in v1.prices.list(params=page).auto_paging_iter()],
        "subscriptions": [_subscription_row(s.to_dict()) for s in subscriptions],
        "subscription_items": [
            {
                column: (item.price.id if column == "price" else _value(item.to_dict(), column))
                for column in STRIPE_EXPORT_TABLES["subscription_items"]
            }
            for subscription in subscriptions
            for item in v1.subscription_items.list(
                params={**page, "subscription": subscription.id}
            ).auto_paging_iter()
        ],
    }
    invoices = [i.to_dict() for i in v1.invoices.list(params=page).auto_paging_iter()]
    tables["invoices"] = [
        {column: _value(invoice, column) for column in STRIPE_INVOICE_TABLES["invoices"]}
        for invoice in invoices
    ]
    tables["invoice_line_items"] = [
        _line_row(invoice["id"], line.to_dict())
        for invoice in invoices
        for line in v1.invoices.line_items.list(invoice["id"], params=page).auto_paging_iter()
    ]
    stripe_dir.mkdir(parents=True, exist_ok=True)
    staged = []
    for table, rows in tables.items():
        columns = (
            {**STRIPE_EXPORT_TABLES, **STRIPE_INVOICE_TABLES}[table]
            + STRIPE_OPTIONAL_COLUMNS.get(table, ())
            + (STRIPE_PRICE_EXTRA_COLUMNS if table == "prices" else ())
        )
        path = stripe_dir / f".{table}.csv.partial"
        with path.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=columns)
            writer.writeheader()
            writer.writerows(rows)
        staged.append((path, stripe_dir / f"{table}.csv"))
    for partial, final in staged:
        os.replace(partial, final)
    return {table: len(rows) for table, rows in tables.items()}
