"""The API's reads that combine the ledger (PostgreSQL, live) with the warehouse (the published
snapshot, as fresh as the last run): a customer's state, explain, anomalies. Every figure comes
with the time it is as of."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import psycopg

from api import store
from api.errors import ApiError
from api.snapshot import Snapshot
from ledger.credit_applications import CREDIT_APPLICATION_KIND, CREDIT_EXPIRY_KIND
from ledger.model import normalised
from ledger.usage_accruals import USAGE_ACCRUAL_KIND, slot_id
from pricing.meters import meter_definition
from pricing.periods import CALENDAR_MONTH_ANCHOR_DAY, anchored_day, billing_period_of

MAX_EXPLAINED_EVENTS = 10_000
# What the customer state cannot show yet, by name (empty: everything it describes is built).
NOT_BUILT: dict[str, str] = {}


def _period_of(
    snapshot: Snapshot, customer_id: str, day: date, *, beginning_in: date | None = None
) -> tuple[date, date]:
    """The customer's billing period containing ``day`` (or beginning in the month of
    ``beginning_in``), by their billing cycle's anchor day (calendar months without one, or in
    a snapshot published before cycles were)."""
    anchor_day = _anchor_days(snapshot, [customer_id]).get(customer_id, CALENDAR_MONTH_ANCHOR_DAY)
    if beginning_in is not None:
        day = anchored_day(beginning_in.year, beginning_in.month, anchor_day)
    return billing_period_of(day, anchor_day)


def _anchor_days(snapshot: Snapshot, customer_ids: list[str]) -> dict[str, int]:
    """The billing anchor day of those of ``customer_ids`` that have one (none in a snapshot
    published before cycles were: calendar months)."""
    if not snapshot.has("customer_billing_cycles"):
        return {}
    return {
        row["customer_id"]: int(row["billing_anchor_day"])
        for row in snapshot.rows(
            "select customer_id, billing_anchor_day from customer_billing_cycles "
            "where list_contains(?, customer_id)",
            [customer_ids],
        )
    }


# --- a customer's state -----------------------------------------------------------------------


def ledger_state(conn: psycopg.Connection, customer_id: str) -> dict[str, Any]:
    """Balances, credit per grant and open invoices from the ledger, in one snapshot."""
    prefix = f"customer:{customer_id}:"
    with conn.transaction():
        conn.execute("set transaction isolation level repeatable read, read only")
        as_of = conn.execute("select now()").fetchone()[0]  # type: ignore[index]
        balances = conn.execute(
            "select substr(e.account, length(%s) + 1), e.currency, sum(e.amount_minor) "
            "from ledger.entries e where e.account in "
            "(select name from ledger.accounts where starts_with(name, %s)) "
            "group by 1, 2 order by 1, 2",
            [prefix, prefix],
        ).fetchall()
        # Granted, less what usage consumed (ledger/credit_applications.py), less what expired.
        per_grant = conn.execute(
            "select case when t.cause_type = 'credit_grant' then t.cause_id "
            "else t.metadata->>'grant_id' end, -sum(e.amount_minor) from ledger.transactions t "
            "join ledger.entries e on e.transaction_id = t.id "
            "where (t.cause_type = 'credit_grant' or t.kind = any(%s)) "
            "and e.account in (%s, %s) group by 1",
            [
                [CREDIT_APPLICATION_KIND, CREDIT_EXPIRY_KIND],
                prefix + "prepaid_credit",
                prefix + "promotional_credit",
            ],
        ).fetchall()
        invoices = conn.execute(
            """
            select invoice_id, sum(e.amount_minor) filter (where t.kind = 'invoice_finalised'),
                sum(e.amount_minor), max(t.effective_at)
            from ledger.entries e
            join ledger.transactions t on t.id = e.transaction_id
            cross join lateral (select case
                when t.kind in ('invoice_finalised', 'write_off') then t.cause_id
                when t.kind = 'payment' then t.metadata->>'invoice_id'
                when t.kind = 'reversal' and starts_with(t.cause_id, 'write_off:')
                    then substr(t.cause_id, 11)
            end as invoice_id) i
            where e.account = %s and i.invoice_id is not null
            group by invoice_id
            having sum(e.amount_minor) <> 0
            order by invoice_id
            """,
            [prefix + "receivable"],
        ).fetchall()
        dunning = dict(
            (row[0], (row[1], row[2]))
            for row in conn.execute(
                "select distinct on (invoice_id) invoice_id, state, occurred_at "
                "from ledger.dunning_events where customer_id = %s "
                "order by invoice_id, occurred_at desc, attempt desc",
                [customer_id],
            ).fetchall()
        )
        grants = store.customer_grants(conn, customer_id)
    remaining = {grant_id: Decimal(amount) for grant_id, amount in per_grant}
    return {
        "as_of": as_of,
        "balances": [
            {"account": purpose, "currency": currency, "amount_minor": Decimal(amount)}
            for purpose, currency, amount in balances
        ],
        "credits": [
            {
                "grant_id": grant["grant_id"],
                "kind": grant["kind"],
                "status": grant["status"],
                "granted_minor": grant["amount_minor"],
                "remaining_minor": remaining.get(grant["grant_id"], Decimal(0)),
                "currency": grant["currency"],
                "expires_at": grant["expires_at"],
                "priority": grant["priority"],
                "metrics": grant["metrics"],
            }
            for grant in grants
        ],
        "open_invoices": [
            {
                "invoice_id": invoice_id,
                "invoiced_minor": Decimal(invoiced or 0),
                "open_minor": Decimal(open_amount),
                "last_posted_effective_at": last_at,
                "dunning_state": dunning.get(invoice_id, (None, None))[0],
                "dunning_state_at": dunning.get(invoice_id, (None, None))[1],
            }
            for invoice_id, invoiced, open_amount, last_at in invoices
        ],
    }


def subscription_state(conn: psycopg.Connection, customer_id: str) -> list[dict[str, Any]]:
    """The customer's subscriptions as Stripe's webhooks last said (empty without webhooks)."""
    exists = conn.execute("select to_regclass('stripe_sync.subscriptions')").fetchone()
    if not exists or exists[0] is None:
        return []
    rows = conn.execute(
        "select subscription_id, status, plan_id, current_period_start, current_period_end, "
        "as_of_event, as_of_created from stripe_sync.subscriptions where customer_id = %s "
        "order by subscription_id",
        [customer_id],
    ).fetchall()
    return [
        {
            "subscription_id": row[0],
            "status": row[1],
            "plan_id": row[2],
            "current_period_start": _from_unix(row[3]),
            "current_period_end": _from_unix(row[4]),
            "as_of_event": row[5],
            "as_of": _from_unix(row[6]),
        }
        for row in rows
    ]


def _from_unix(value: int | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(int(value), UTC)


def warehouse_state(
    snapshot: Snapshot, customer_id: str, today: date, *, beginning_in: date | None = None
) -> dict[str, Any]:
    """The plan in force and a period's usage per meter, from the published snapshot: the
    period running ``today``, or the one beginning in the month of ``beginning_in``."""
    start, end = _period_of(snapshot, customer_id, today, beginning_in=beginning_in)
    plan = None
    if snapshot.has("customer_plan_days"):
        plans = snapshot.rows(
            "select plan_id, subscription_id, valid_from_date, valid_to_date "
            "from customer_plan_days where customer_id = ? order by valid_from_date desc limit 1",
            [customer_id],
        )
        plan = plans[0] if plans else None
    usage: list[dict[str, Any]] = []
    if snapshot.has("billable_usage_daily"):
        usage = snapshot.rows(
            "select meter_id, currency, sum(quantity_units) as quantity_units, "
            "sum(amount_minor_exact) as amount_minor_exact, max(usage_date) as last_usage_date "
            "from billable_usage_daily where customer_id = ? and usage_date >= ? "
            "and usage_date < ? group by meter_id, currency order by meter_id",
            [customer_id, start, end],
        )
    return {
        "as_of": snapshot.published_at,
        "plan": plan,
        "current_period": {"start_date": start, "end_date": end},
        "usage_to_date": usage,
        "allowances": _allowances(snapshot, customer_id, start, end),
        "entitlement": _entitlement(snapshot, customer_id, start, end),
    }


def _entitlement(snapshot: Snapshot, customer_id: str, start: date, end: date) -> dict | None:
    """The spend cap and entitlement state as of the period's last rated day (None before
    any usage is rated in the period)."""
    if not snapshot.has("customer_entitlements_daily"):
        return None
    rows = snapshot.rows(
        "select usage_date as through_date, entitlement_state as state, "
        "period_to_date_spend_minor as spend_minor, spend_cap_minor, warning_share, "
        "over_cap_minor, credit_balance_minor from customer_entitlements_daily "
        "where customer_id = ? and usage_date >= ? and usage_date < ? "
        "order by usage_date desc limit 1",
        [customer_id, start, end],
    )
    return rows[0] if rows else None


def _allowances(snapshot: Snapshot, customer_id: str, start: date, end: date) -> list[dict]:
    """Per meter with included units: how many of them the period's usage has used so far, as
    of the last rated day (rating counts the allowance on the period to date)."""
    if not snapshot.has("billable_usage_daily"):
        return []
    return snapshot.rows(
        "select meter_id, usage_date as through_date, included_units, "
        "least(period_to_date_units, included_units) as used_units, "
        "greatest(included_units - period_to_date_units, 0) as left_units "
        "from billable_usage_daily where customer_id = ? and usage_date >= ? "
        "and usage_date < ? and included_units > 0 "
        "qualify row_number() over (partition by meter_id order by usage_date desc) = 1 "
        "order by meter_id",
        [customer_id, start, end],
    )


# --- explain ----------------------------------------------------------------------------------


def explain_slot(
    conn: psycopg.Connection, snapshot: Snapshot, *, customer_id: str, meter_id: str, day: date
) -> dict[str, Any]:
    """From the money back to the raw lines: ledger → invoice line → rating → daily aggregate
    → the accepted events (and the duplicates that were not billed again)."""
    _require(
        snapshot,
        "meters",
        "billable_usage_daily",
        "invoice_lines",
        "usage_daily",
        "meter_usage_daily",
        "usage_event_lines",
    )
    meters = snapshot.rows("select * from meters where meter_id = ?", [meter_id])
    if not meters:
        raise ApiError(404, "unknown_metric", f"{meter_id!r} is not a meter of the price book.")
    meter = meters[0]
    rating = snapshot.rows(
        "select plan_id, subscription_id, quantity_units, unit_price_minor, amount_minor_exact, "
        "currency, is_priced, billing_period_start_date, charge_model, charge_effective_from, "
        "included_units, period_to_date_units, period_to_date_amount_minor_exact, "
        "prior_period_to_date_amount_minor_exact from billable_usage_daily "
        "where customer_id = ? and meter_id = ? and usage_date = ?",
        [customer_id, meter_id, day],
    )
    start, _ = _period_of(snapshot, customer_id, day)
    invoice_line = snapshot.rows(
        "select billing_period_start_date, billing_period_end_date, quantity_units, "
        "amount_minor_exact, amount_minor, rounding_minor, billed_days, currency "
        "from invoice_lines where line_type = 'usage' and customer_id = ? and meter_id = ? "
        "and billing_period_start_date = ?",
        [customer_id, meter_id, start],
    )
    definition = meter_definition(meter)
    condition, parameters = definition.event_filter_sql()
    parameters = [customer_id, day, *parameters]
    where = f"where customer_id = ? and usage_date = ? and {condition}"
    aggregate = snapshot.rows(
        "select sum(event_count) as event_count, sum(input_tokens) as input_tokens, "
        "sum(output_tokens) as output_tokens, sum(cache_read_tokens) as cache_read_tokens, "
        f"sum(cost_minor) as cost_minor from usage_daily {where} having count(*) > 0",
        parameters,
    )
    metered = snapshot.rows(
        "select quantity_units, day_units from meter_usage_daily "
        "where customer_id = ? and meter_id = ? and usage_date = ?",
        [customer_id, meter_id, day],
    )
    quantity = "1" if definition.aggregation == "count" else definition.quantity_property
    accepted_where = f"from usage_event_lines {where}"
    events = snapshot.rows(
        f"select event_id, {quantity} as quantity_units, occurred_at, source_file, line_number, "
        f"arrival_date {accepted_where} and status = 'accepted' order by occurred_at, event_id "
        f"limit {MAX_EXPLAINED_EVENTS + 1}",
        parameters,
    )
    day_aggregate = definition.day_aggregate_sql(where="status = 'accepted'")
    totals = snapshot.rows(
        f"select count(*) filter (where status = 'accepted') as accepted_events, "
        f"coalesce({day_aggregate}, 0) "
        f"as day_units, count(*) filter (where status = 'duplicate') as duplicate_lines "
        f"{accepted_where}",
        parameters,
    )[0]
    # The events reproduce the day's aggregate; for a count or sum meter that is the quantity
    # billed, for the others the billed quantity is the change of the period's value.
    day_units = metered[0]["day_units"] if metered else None
    return {
        "customer_id": customer_id,
        "metric": meter_id,
        "day": day,
        "warehouse_as_of": snapshot.published_at,
        "ledger": ledger_of_slot(conn, slot_id(customer_id, meter_id, day)),
        "invoice_line": invoice_line[0] if invoice_line else None,
        "rating": rating_inputs(snapshot, rating[0], customer_id, meter_id, day)
        if rating
        else None,
        "meter": {
            "aggregation": meter["aggregation"],
            "quantity_property": meter["quantity_property"],
            "model": meter["model"],
            "event_type": meter["event_type"],
            "property_filters": meter.get("property_filters"),
        },
        "daily_aggregate": aggregate[0] if aggregate else None,
        "events": {
            "accepted": int(totals["accepted_events"]),
            "quantity_units": int(totals["day_units"]),
            "matches_billed_quantity": day_units is not None
            and int(totals["day_units"]) == int(day_units),
            "duplicate_lines_not_billed": int(totals["duplicate_lines"]),
            "truncated": len(events) > MAX_EXPLAINED_EVENTS,
            "items": events[:MAX_EXPLAINED_EVENTS],
        },
    }


def rating_inputs(
    snapshot: Snapshot, rated: dict[str, Any], customer_id: str, meter_id: str, day: date
) -> dict[str, Any]:
    """How the day's amount was rated: the charge in force, its tiers, the allowance, the
    period-to-date amounts whose difference is the day's amount (see docs/pricing.md), and the
    credit grants that paid for it."""
    tiers: list[dict[str, Any]] = []
    if rated["charge_model"] in ("graduated", "volume") and snapshot.has("price_book_charge_tiers"):
        tiers = snapshot.rows(
            "select up_to_units, unit_price_minor, flat_fee_minor from price_book_charge_tiers "
            "where plan_id = ? and meter_id = ? and effective_from = ? "
            "order by up_to_units nulls last",
            [rated["plan_id"], meter_id, rated["charge_effective_from"]],
        )
    included = rated["included_units"]
    through_day = rated["period_to_date_units"]
    allowance = None
    if included:
        allowance = {
            "included_units": included,
            "used_through_day": min(through_day, included),
            "left_after_day": max(included - through_day, 0),
        }
    credits: list[dict[str, Any]] = []
    if snapshot.has("credit_applications"):
        credits = snapshot.rows(
            "select grant_id, amount_minor as applied_minor from credit_applications "
            "where customer_id = ? and meter_id = ? and usage_date = ? order by grant_id",
            [customer_id, meter_id, day],
        )
    return rated | {
        "tiers": tiers,
        "allowance": allowance,
        "credits": credits,
        "amount_rule": "period_to_date_amount_minor_exact - "
        "prior_period_to_date_amount_minor_exact",
    }


def _require(snapshot: Snapshot, *tables: str) -> None:
    missing = [name for name in tables if not snapshot.has(name)]
    if missing:
        raise ApiError(
            503,
            "snapshot_incomplete",
            f"The published warehouse snapshot lacks {', '.join(missing)} (the pipeline has not "
            "built them yet); run the pipeline and publish again.",
        )


def ledger_of_slot(conn: psycopg.Connection, slot: str) -> dict[str, Any]:
    with conn.transaction():
        conn.execute("set transaction isolation level repeatable read, read only")
        as_of = conn.execute("select now()").fetchone()[0]  # type: ignore[index]
        rows = conn.execute(
            "select t.transaction_key, t.effective_at, t.posted_at, e.account, e.amount_minor, "
            "e.currency from ledger.transactions t "
            "join ledger.entries e on e.transaction_id = t.id "
            "where t.kind = %s and t.cause_id = %s order by t.id, e.id",
            [USAGE_ACCRUAL_KIND, slot],
        ).fetchall()
    transactions: dict[str, dict[str, Any]] = {}
    total = Decimal(0)
    for key, effective_at, posted_at, account, amount, currency in rows:
        transaction = transactions.setdefault(
            key,
            {
                "transaction_key": key,
                "effective_at": effective_at,
                "posted_at": posted_at,
                "entries": [],
            },
        )
        transaction["entries"].append(
            {"account": account, "amount_minor": Decimal(amount), "currency": currency}
        )
        if account.endswith(":unbilled_receivable"):
            total += Decimal(amount)
    return {
        "as_of": as_of,
        "slot": slot,
        "accrued_minor": total,
        "revisions": list(transactions.values()),
    }


def explain_event(snapshot: Snapshot, event_id: str) -> dict[str, Any]:
    """From a raw event forward: each line that carried it, and what became of it."""
    _require(snapshot, "usage_event_lines", "quarantined_usage_lines", "meters")
    lines = snapshot.rows(
        "select source_file, line_number, arrival_date, status, customer_id, usage_date, model, "
        "event_type, request_kind, tool from usage_event_lines where event_id = ? "
        "order by received_at, source_file, line_number",
        [event_id],
    )
    quarantined = snapshot.rows(
        "select source_file, line_number, arrival_date, reason from quarantined_usage_lines "
        "where event_id = ? and reason <> 'conflicting_duplicate' "
        "order by arrival_date, source_file, line_number",
        [event_id],
    )
    accepted = next((line for line in lines if line["status"] == "accepted"), None)
    meters = [
        (meter["meter_id"], meter_definition(meter))
        for meter in snapshot.rows("select * from meters order by meter_id")
    ]
    outcomes: list[dict[str, Any]] = []
    for line in lines:
        outcome = {key: line[key] for key in ("source_file", "line_number", "arrival_date")}
        if line["status"] == "accepted":
            outcome |= {
                "outcome": "billed",
                "customer_id": line["customer_id"],
                "usage_date": line["usage_date"],
                "slots": [
                    {
                        "metric": meter_id,
                        "ledger_slot": slot_id(line["customer_id"], meter_id, line["usage_date"]),
                    }
                    for meter_id, definition in meters
                    if definition.matches(line)
                ],
            }
        elif line["status"] == "duplicate":
            outcome |= {"outcome": "duplicate", "reason": "the same event arrived before"}
            if accepted:
                outcome["duplicate_of"] = {
                    "source_file": accepted["source_file"],
                    "line_number": accepted["line_number"],
                }
        else:
            outcome |= {
                "outcome": "quarantined",
                "reason": "conflicting_duplicate",
                "detail": "the same event_id arrived earlier with other content; never billed",
            }
        outcomes.append(outcome)
    for line in quarantined:
        outcomes.append(line | {"outcome": "quarantined"})
    if not outcomes:
        raise ApiError(
            404, "unknown_event", f"No raw line with event_id {event_id!r} has been ingested."
        )
    return {"event_id": event_id, "warehouse_as_of": snapshot.published_at, "lines": outcomes}


# --- anomalies --------------------------------------------------------------------------------


def anomalies(snapshot: Snapshot, since: date | None, limit: int) -> dict[str, Any]:
    findings: list[dict[str, Any]] = []
    if snapshot.has("anomaly_findings"):
        findings = snapshot.rows(
            "select finding_day, kind, customer_id, meter_id, observed, expected, threshold, "
            "message, detected_at from anomaly_findings "
            "where cast(? as date) is null or finding_day >= cast(? as date) "
            "order by detected_at desc, finding_day desc, kind limit ?",
            [since, since, limit],
        )
    discrepancies: list[dict[str, Any]] = []
    if snapshot.has("reconciliation_discrepancies"):
        # Per invoice charge (customer, period, meter): since = periods that end after it, by
        # each customer's own cycle (a period lasts at most 31 days: the SQL keeps a superset).
        candidates = snapshot.rows(
            "select * from reconciliation_discrepancies where cast(? as date) is null "
            "or billing_period_start_date > cast(? as date) - interval 31 days "
            "order by billing_period_start_date desc, customer_id, meter_id",
            [since, since],
        )
        anchor_days = _anchor_days(snapshot, sorted({row["customer_id"] for row in candidates}))
        discrepancies = [
            row
            for row in candidates
            if since is None
            or billing_period_of(
                row["billing_period_start_date"],
                anchor_days.get(row["customer_id"], CALENDAR_MONTH_ANCHOR_DAY),
            )[1]
            > since
        ][:limit]
    return {
        "as_of": snapshot.published_at,
        "anomalies": findings,
        "reconciliation_discrepancies": discrepancies,
    }


def jsonable(value: Any) -> Any:
    """Decimals as strings (never floats), times in ISO 8601 (the warehouse's naive timestamps
    are UTC), recursively."""
    if isinstance(value, Decimal):
        return normalised(value)
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, dict):
        return {key: jsonable(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(item) for item in value]
    return value
