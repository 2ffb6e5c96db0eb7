"""What a pipeline run leaves behind, as one comparable value.

A clean run and a re-run (in another order, or after a crash) must leave the same ledger, the
same usage on Stripe's meters and no duplicate row anywhere. ``fingerprint(settings, stripe)``
reads all of it back from the real stores (the DuckDB warehouse, the PostgreSQL ledger and
outbox, the local Stripe) into a frozen ``PipelineFingerprint``; two fingerprints compare with
``==`` and ``describe_differences`` says what differs, for an assertion message.

Some of it depends on the *order* in which usage arrived, by design: the ledger and the outbox
post only the difference between a slot's rated amount and what they already hold, as revisions
``r1, r2, …``, so a run of day 3 before day 1 splits a slot into other revisions than a run in
order (the same totals, other transactions). Those fields are named in ``ORDER_DEPENDENT``;
``order_independent()`` blanks them, for comparing runs made in different orders.
"""

from __future__ import annotations

import json
import urllib.request
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import psycopg

from ledger.model import simplest
from ledger.store import Ledger
from orchestration.resources import ledger_url_outside_dagster
from orchestration.settings import Settings
from stripe_local.server import LocalStripeServer
from stripe_local.store import LocalStripeStore


@dataclass(frozen=True)
class NaturalKey:
    """A table and the columns that identify one of its rows (``where`` narrows the rows)."""

    table: str
    columns: tuple[str, ...]
    where: str | None = None

    @property
    def name(self) -> str:
        where = f" where {self.where}" if self.where else ""
        return f"{self.table} ({', '.join(self.columns)}){where}"


# Every warehouse table with a natural key: ingestion, dbt's models (their unique_combination
# tests), the staged ledger batches, the findings, and the copies of the ledger and outbox.
WAREHOUSE_NATURAL_KEYS = (
    NaturalKey("ingest.usage_files", ("source_file",)),
    NaturalKey("ingest.usage_event_lines", ("source_file", "line_number")),
    NaturalKey("ingest.usage_event_lines", ("event_id",), "status = 'accepted'"),
    NaturalKey("ingest.invalid_usage_lines", ("source_file", "line_number")),
    NaturalKey("ingest.partition_usage_dates", ("arrival_date", "usage_date")),
    NaturalKey("main.stg_usage__events", ("event_id",)),
    NaturalKey(
        "main.int_usage_daily",
        ("customer_id", "usage_date", "event_type", "model", "request_kind", "tool"),
    ),
    NaturalKey("main.int_meter_usage_daily", ("customer_id", "meter_id", "usage_date")),
    NaturalKey(
        "main.int_unmetered_usage_daily",
        ("customer_id", "usage_date", "event_type", "model", "request_kind", "tool"),
    ),
    NaturalKey("main.int_meter_event_lag_daily", ("usage_date", "meter_id")),
    NaturalKey("main.int_customer_plan_days", ("subscription_id",)),
    NaturalKey("main.billable_usage_daily", ("customer_id", "meter_id", "usage_date")),
    NaturalKey(
        "main.invoice_lines", ("customer_id", "billing_period_start_date", "line_type", "line_id")
    ),
    NaturalKey("main.usage_conservation_daily", ("arrival_date",)),
    NaturalKey(
        "main.int_ledger_usage_accruals_daily",
        ("customer_id", "meter_id", "usage_date", "currency"),
    ),
    NaturalKey(
        "main.int_invoice_reconciliation", ("customer_id", "billing_period_start_date", "meter_id")
    ),
    NaturalKey("main.billing_conservation_daily", ("customer_id", "meter_id", "usage_date")),
    NaturalKey("main.usage_reconciliation_daily", ("customer_id", "meter_id", "usage_date")),
    NaturalKey(
        "main.reconciliation_discrepancies",
        ("customer_id", "billing_period_start_date", "meter_id"),
    ),
    NaturalKey("main.invoice_accuracy", ("billing_period_start_date", "currency")),
    NaturalKey("main.metering_lag_daily", ("usage_date", "meter_id")),
    NaturalKey("main.metering_lag_by_day", ("usage_date",)),
    NaturalKey("main.customer_balances", ("customer_id", "currency")),
    NaturalKey(
        "billing.ledger_batch_entries",
        ("window_start", "window_end", "transaction_key", "entry_index"),
    ),
    NaturalKey("quality.anomaly_findings", ("finding_day", "kind", "customer_id", "meter_id")),
    NaturalKey("stripe_sync.meter_usage_daily", ("customer_id", "meter_id", "usage_date")),
    NaturalKey("stripe_sync.outbox_slots", ("operation", "slot_id")),
    NaturalKey("ledger.transactions", ("transaction_key",)),
    NaturalKey("ledger.transactions", ("id",)),
    NaturalKey("ledger.entries", ("id",)),
    NaturalKey("ledger.accounts", ("name",)),
    NaturalKey("ledger.dunning_events", ("event_key",)),
    NaturalKey("stripe_raw.customers", ("id",)),
    NaturalKey("stripe_raw.subscriptions", ("id",)),
    NaturalKey("stripe_raw.subscription_items", ("id",)),
    NaturalKey("stripe_raw.prices", ("id",)),
    NaturalKey("stripe_raw.products", ("id",)),
)

# The same in PostgreSQL (the ledger and the Stripe outbox): most are unique constraints, listed
# so that dropping one would show.
LEDGER_NATURAL_KEYS = (
    NaturalKey("ledger.transactions", ("transaction_key",)),
    NaturalKey("ledger.entries", ("transaction_id", "account", "currency")),
    NaturalKey("ledger.accounts", ("name",)),
    NaturalKey("ledger.dunning_events", ("event_key",)),
    NaturalKey("stripe_sync.outbox", ("idempotency_key",)),
    NaturalKey("stripe_sync.outbox", ("operation", "slot_id", "revision")),
)

# On the local Stripe: one meter event per identifier (its primary key). The identifier is a
# digest of the slot and revision, so one event per slot revision is checked against the
# outbox instead (``stripe_events_not_in_outbox``).
STRIPE_NATURAL_KEYS = (NaturalKey("meter_events", ("identifier",)),)

# Warehouse tables whose content must not depend on how often or in which order days ran;
# columns that record *when* something ran (read_at, as_of, sent times, lags to posting) and
# revision counts are left out.
WAREHOUSE_CONTENT = (
    ("ingest.usage_files", "*"),
    ("ingest.usage_event_lines", "*"),
    ("ingest.invalid_usage_lines", "*"),
    ("ingest.partition_usage_dates", "*"),
    ("main.int_usage_daily", "*"),
    ("main.billable_usage_daily", "*"),
    ("main.invoice_lines", "*"),
    ("main.usage_conservation_daily", "*"),
    ("main.int_ledger_usage_accruals_daily", "* exclude (revisions)"),
    ("main.billing_conservation_daily", "*"),
    ("main.usage_reconciliation_daily", "*"),
    ("main.int_invoice_reconciliation", "*"),
    ("main.reconciliation_discrepancies", "*"),
    ("main.invoice_accuracy", "*"),
    ("stripe_sync.meter_usage_daily", "* exclude (read_at)"),
    (
        "stripe_sync.outbox_slots",
        "* exclude (revisions, first_sent_at, last_sent_at)",
    ),
)

# Rows that are history, not state: a slot whose quantities net to zero sent nothing. Days billed
# out of order can send usage and take it back (a `unique_count` value first seen on a day billed
# later moves to that day), which a run in order never sends; as a ledger slot that nets to zero
# is no posting (`_ledger_totals`).
CONTENT_ROWS = {
    "stripe_sync.outbox_slots": (
        "quantity_sent <> 0 or quantity_pending <> 0 or quantity_dead <> 0"
    ),
}

ORDER_DEPENDENT = ("ledger_content_hash", "ledger_transactions", "meter_events_accepted", "outbox")

StripeSource = LocalStripeServer | LocalStripeStore | Path | str


@dataclass(frozen=True)
class PipelineFingerprint:
    """Everything a run leaves that a re-run must leave the same. Tuples, sorted, so that it
    compares with ``==`` and hashes."""

    # The ledger (PostgreSQL): Ledger.verify()'s verdict and content hash (keys and amounts of
    # every transaction), and its totals per slot (the key without its revision), account and
    # currency, which do not depend on how a slot's amount was split into revisions.
    ledger_ok: bool
    ledger_problems: tuple[str, ...]
    ledger_content_hash: str
    ledger_transactions: int
    ledger_totals: tuple[tuple[str, str, str, str], ...]
    # The local Stripe: usage counted per (Stripe customer, meter event_name, UTC day), and how
    # many meter events it accepted.
    stripe_usage: tuple[tuple[str, str, str, int], ...]
    meter_events_accepted: int
    # The outbox (PostgreSQL): each intended write (key, slot, revision, quantity, state), and
    # how many are still pending or dead.
    outbox: tuple[tuple[str, str, int, int, str], ...]
    outbox_pending: int
    outbox_dead: int
    # Slots held back (waiting for an arrival day not ingested yet): none once every day ran.
    meter_slots_held: int
    # Exactly once between the two: meter events whose identifier no outbox write has (sent
    # by something else, or under another identifier), and writes the outbox holds as sent
    # that Stripe does not have.
    stripe_events_not_in_outbox: int
    outbox_sent_not_at_stripe: int
    # Rows beyond the first for each natural key (should all be 0); None: table absent.
    duplicate_rows: tuple[tuple[str, int | None], ...]
    # Per warehouse table of WAREHOUSE_CONTENT: "<rows> rows <digest>", or "absent".
    warehouse_content: tuple[tuple[str, str], ...]

    def duplicates(self) -> dict[str, int]:
        """The natural keys with duplicate rows, and how many rows too many."""
        return {name: count for name, count in self.duplicate_rows if count}

    def problems(self) -> list[str]:
        """What is wrong in this state alone, whatever a clean run left."""
        found = [f"ledger: {problem}" for problem in self.ledger_problems]
        if not self.ledger_ok and not found:
            found.append("ledger: verify() is not ok")
        found += [
            f"{count} duplicate row(s) in {name}" for name, count in self.duplicates().items()
        ]
        if self.outbox_pending or self.outbox_dead:
            found.append(f"outbox: {self.outbox_pending} pending, {self.outbox_dead} dead")
        if self.meter_slots_held:
            found.append(f"{self.meter_slots_held} meter slot(s) held back, not sent")
        if self.stripe_events_not_in_outbox:
            found.append(
                f"{self.stripe_events_not_in_outbox} meter event(s) at Stripe not in the outbox"
            )
        if self.outbox_sent_not_at_stripe:
            found.append(
                f"{self.outbox_sent_not_at_stripe} write(s) sent per the outbox, absent at Stripe"
            )
        return found

    def order_independent(self) -> PipelineFingerprint:
        """This fingerprint without the fields that record the order usage arrived in."""
        return replace(
            self,
            ledger_content_hash="",
            ledger_transactions=0,
            meter_events_accepted=0,
            outbox=(),
        )

    def differences(
        self, actual: PipelineFingerprint, *, ignore: Iterable[str] = (), limit: int = 8
    ) -> list[str]:
        """What ``actual`` has other than this (expected) fingerprint, field by field; at most
        ``limit`` items per field are named."""
        skipped = set(ignore)
        found = []
        for field in fields(self):
            if field.name in skipped:
                continue
            expected_value = getattr(self, field.name)
            actual_value = getattr(actual, field.name)
            if expected_value == actual_value:
                continue
            if isinstance(expected_value, tuple) and isinstance(actual_value, tuple):
                found.append(
                    f"{field.name}: " + _tuple_difference(expected_value, actual_value, limit)
                )
            else:
                found.append(f"{field.name}: expected {expected_value!r}, got {actual_value!r}")
        return found


def describe_differences(
    expected: PipelineFingerprint, actual: PipelineFingerprint, *, ignore: Iterable[str] = ()
) -> str:
    """One line per field that differs (empty when none does): for assertion messages."""
    return "\n".join(expected.differences(actual, ignore=ignore))


def fingerprint(settings: Settings, stripe: StripeSource) -> PipelineFingerprint:
    """Read the state a pipeline run left behind in ``settings``' warehouse and ledger, and on
    the local Stripe ``stripe`` (a running ``LocalStripeServer``, its store, the path of its
    SQLite file, or its URL). Call it between runs: it opens the warehouse read-only."""
    # settings' own URL first: the environment may point at another pipeline by now.
    ledger_url = settings.ledger_url or ledger_url_outside_dagster(settings)
    with Ledger.connect(ledger_url) as ledger:
        report = ledger.verify()
    with psycopg.connect(ledger_url) as conn:
        ledger_totals = _ledger_totals(conn)
        transactions = _scalar(conn, "select count(*) from ledger.transactions")
        outbox = _outbox(conn)
        held = _held_slots(conn)
        ledger_duplicates = [
            (f"postgres {key.name}", _pg_duplicates(conn, key)) for key in LEDGER_NATURAL_KEYS
        ]
    events = _meter_events(stripe)
    identifiers = {str(event.get("identifier")) for event in events}
    warehouse_duplicates, content = _warehouse_state(Path(settings.warehouse_path))
    return PipelineFingerprint(
        ledger_ok=report.ok,
        ledger_problems=tuple(report.problems()),
        ledger_content_hash=report.content_hash,
        ledger_transactions=transactions,
        ledger_totals=ledger_totals,
        stripe_usage=_stripe_usage(events),
        meter_events_accepted=len(events),
        outbox=outbox,
        outbox_pending=sum(1 for row in outbox if row[4] == "pending"),
        outbox_dead=sum(1 for row in outbox if row[4] == "dead"),
        meter_slots_held=held,
        stripe_events_not_in_outbox=len(identifiers - {row[0] for row in outbox}),
        outbox_sent_not_at_stripe=len({row[0] for row in outbox if row[4] == "sent"} - identifiers),
        duplicate_rows=tuple(
            sorted([*warehouse_duplicates, *ledger_duplicates, *_stripe_duplicates(events)])
        ),
        warehouse_content=content,
    )


def stripe_usage_by_slot(stripe: StripeSource) -> dict[tuple[str, str, str], int]:
    """Usage the local Stripe's meters counted per (customer, event_name, ISO day)."""
    return {(c, m, d): q for c, m, d, q in _stripe_usage(_meter_events(stripe))}


# Reading --------------------------------------------------------------------------------------


def _scalar(conn: psycopg.Connection, query: str) -> int:
    row = conn.execute(query).fetchone()
    return int(row[0]) if row else 0


def _ledger_totals(conn: psycopg.Connection) -> tuple[tuple[str, str, str, str], ...]:
    rows = conn.execute(
        """
        select regexp_replace(t.transaction_key, ':r[0-9]+$', ''), e.account, e.currency,
            sum(e.amount_minor)
        from ledger.transactions t join ledger.entries e on e.transaction_id = t.id
        group by 1, 2, 3 having sum(e.amount_minor) <> 0
        """
    ).fetchall()
    return tuple(
        sorted(
            (slot, account, currency, str(simplest(amount)))
            for slot, account, currency, amount in rows
        )
    )


def _outbox(conn: psycopg.Connection) -> tuple[tuple[str, str, int, int, str], ...]:
    exists = conn.execute("select to_regclass('stripe_sync.outbox') is not null").fetchone()
    if not (exists and exists[0]):
        return ()
    rows = conn.execute(
        "select idempotency_key, slot_id, revision, quantity_delta, state from stripe_sync.outbox"
    ).fetchall()
    return tuple(sorted((k, s, int(r), int(q), state) for k, s, r, q, state in rows))


def _held_slots(conn: psycopg.Connection) -> int:
    exists = conn.execute(
        "select to_regclass('stripe_sync.held_meter_slots') is not null"
    ).fetchone()
    if not (exists and exists[0]):
        return 0
    return _scalar(conn, "select count(*) from stripe_sync.held_meter_slots")


def _pg_duplicates(conn: psycopg.Connection, key: NaturalKey) -> int | None:
    exists = conn.execute("select to_regclass(%s) is not null", [key.table]).fetchone()
    if not (exists and exists[0]):
        return None
    return _scalar(conn, _duplicates_query(key))


def _duplicates_query(key: NaturalKey) -> str:
    columns = ", ".join(key.columns)
    where = f"where {key.where}" if key.where else ""
    return (
        f"select coalesce(sum(copies - 1), 0) from (select count(*) as copies from {key.table} "
        f"{where} group by {columns} having count(*) > 1) as repeated"
    )


def _warehouse_state(
    path: Path,
) -> tuple[list[tuple[str, int | None]], tuple[tuple[str, str], ...]]:
    if not path.exists():
        return [(f"warehouse {key.name}", None) for key in WAREHOUSE_NATURAL_KEYS], tuple(
            (table, "absent") for table, _ in WAREHOUSE_CONTENT
        )
    with duckdb.connect(str(path), read_only=True) as conn:
        tables = {
            f"{schema}.{name}"
            for schema, name in conn.execute(
                "select table_schema, table_name from information_schema.tables"
            ).fetchall()
        }
        duplicates: list[tuple[str, int | None]] = []
        for key in WAREHOUSE_NATURAL_KEYS:
            count = None
            if key.table in tables:
                row = conn.execute(_duplicates_query(key)).fetchone()
                count = int(row[0]) if row else 0
            duplicates.append((f"warehouse {key.name}", count))
        content = []
        for table, columns in WAREHOUSE_CONTENT:
            if table not in tables:
                content.append((table, "absent"))
                continue
            # sum, not xor, of row hashes: order-free, and a duplicated row changes it.
            where = CONTENT_ROWS.get(table, "true")
            rows, digest = conn.execute(
                f"select count(*), coalesce(sum(hash(r)::hugeint), 0) "
                f"from (select {columns} from {table} where {where}) as r"
            ).fetchone() or (0, 0)
            content.append((table, f"{rows} rows {int(digest):x}"))
    return duplicates, tuple(content)


def _meter_events(stripe: StripeSource) -> list[dict[str, Any]]:
    if isinstance(stripe, LocalStripeServer):
        return stripe.store.meter_events()
    if isinstance(stripe, LocalStripeStore):
        return stripe.meter_events()
    if isinstance(stripe, Path):
        store = LocalStripeStore(stripe)
        try:
            return store.meter_events()
        finally:
            store.close()
    with urllib.request.urlopen(f"{stripe.rstrip('/')}/_local/meter_events", timeout=30) as answer:
        return json.loads(answer.read())


def _usage_day(event: dict[str, Any]) -> str:
    return datetime.fromtimestamp(int(event["timestamp"]), UTC).date().isoformat()


def _stripe_usage(events: Sequence[dict[str, Any]]) -> tuple[tuple[str, str, str, int], ...]:
    totals: Counter[tuple[str, str, str]] = Counter()
    for event in events:
        key = (
            str(event["payload"]["stripe_customer_id"]),
            str(event["event_name"]),
            _usage_day(event),
        )
        totals[key] += int(event["payload"]["value"])
    # Usage sent and taken back is no usage (see CONTENT_ROWS).
    return tuple(sorted((c, m, d, q) for (c, m, d), q in totals.items() if q != 0))


def _stripe_duplicates(events: Sequence[dict[str, Any]]) -> list[tuple[str, int | None]]:
    identifiers = Counter(str(event.get("identifier")) for event in events)
    return [(f"stripe {STRIPE_NATURAL_KEYS[0].name}", sum(n - 1 for n in identifiers.values()))]


def _tuple_difference(expected: tuple[Any, ...], actual: tuple[Any, ...], limit: int) -> str:
    if all(isinstance(item, tuple) and len(item) >= 2 for item in (*expected, *actual)):
        expected_map = {item[:-1]: item[-1] for item in expected}
        actual_map = {item[:-1]: item[-1] for item in actual}
        if len(expected_map) == len(expected) and len(actual_map) == len(actual):
            return _mapping_difference(expected_map, actual_map, limit)
    missing = [item for item in expected if item not in set(actual)]
    extra = [item for item in actual if item not in set(expected)]
    return f"{len(missing)} missing {missing[:limit]}, {len(extra)} unexpected {extra[:limit]}"


def _mapping_difference(expected: dict[Any, Any], actual: dict[Any, Any], limit: int) -> str:
    missing = [key for key in expected if key not in actual]
    extra = [key for key in actual if key not in expected]
    changed = [key for key in expected if key in actual and expected[key] != actual[key]]
    parts = []
    if missing:
        parts.append(
            f"{len(missing)} missing: " + ", ".join(f"{k}={expected[k]!r}" for k in missing[:limit])
        )
    if extra:
        parts.append(
            f"{len(extra)} unexpected: " + ", ".join(f"{k}={actual[k]!r}" for k in extra[:limit])
        )
    if changed:
        parts.append(
            f"{len(changed)} changed: "
            + ", ".join(f"{k}: {expected[k]!r} -> {actual[k]!r}" for k in changed[:limit])
        )
    return "; ".join(parts)
