"""Which Stripe meter slots must wait: usage an arrival day not yet ingested could still lower.

Copies of an ``event_id`` are resolved over every day ingested: the copy received first wins
(``ingestion/usage_events.py``). Run a later arrival day before an earlier one and a copy in the
later day's files wins for now; when the earlier day runs, its own copy wins, and if the two
differ (a conflicting duplicate) the slot's usage goes *down*. The ledger can post that as a
revision; Stripe cannot: a meter event, once accepted, only adds, and cancelling one
(``billing.meter_event_adjustments``) is possible only within 24 hours of sending it and is
confirmed asynchronously. So usage is never sent while such a day is outstanding.

A copy that displaces one received on arrival day ``A`` was received earlier, so it lies in an
arrival day no later than ``A``; and since ``occurred_at`` is at most 5 minutes after
``received_at`` and a file's ``received_at`` at most 6 hours before its day, a copy of an event
that occurred on ``U`` lies in an arrival day no earlier than ``U - 1``. A slot of customer ``c``
and usage date ``U`` is held while an arrival day in ``[U - 1, A]`` has raw files ingestion has
not read, ``A`` the latest arrival day of the slot's accepted usage. Not covered (a decrease is
then still reported by the sender and flagged ``extra_usage`` by reconciliation): a conflicting
copy with another ``occurred_at`` received days earlier, one received in the 6 hours before its
file's day, and a file that changes after its day ran.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import date, timedelta
from pathlib import Path

import duckdb

from ingestion.usage_events import day_files
from stripe_sync.meter_events import MeterSlot
from stripe_sync.outbox import HeldSlot

# How many days before its usage date a copy of an event can arrive (see the module docstring).
EARLIEST_ARRIVAL_BEFORE_USAGE = timedelta(days=1)

CustomerDay = tuple[str, date]


def arrival_days_not_ingested(
    conn: duckdb.DuckDBPyConnection, raw_usage_dir: Path, arrival_days: Iterable[date]
) -> set[date]:
    """The arrival days among ``arrival_days`` with a raw file ingestion has not read: days not
    run yet, or files delivered to a day after it ran."""
    days = sorted(set(arrival_days))
    if not days:
        return set()
    ingested = {
        source_file
        for (source_file,) in conn.execute(
            "select source_file from ingest.usage_files "
            "where arrival_date in (select unnest(?::date[]))",
            [days],
        ).fetchall()
    }
    return {
        day
        for day in days
        if any(
            path.relative_to(raw_usage_dir).as_posix() not in ingested
            for path in day_files(raw_usage_dir, day)
        )
    }


def unsettled_customer_days(
    conn: duckdb.DuckDBPyConnection, raw_usage_dir: Path, usage_dates: Iterable[date]
) -> dict[CustomerDay, tuple[date, ...]]:
    """Per customer and usage date whose accepted usage an outstanding arrival day could still
    lower, those arrival days (customer-days without such a day are left out)."""
    dates = sorted(set(usage_dates))
    if not dates:
        return {}
    spans = {
        (customer_id, usage_date): (usage_date - EARLIEST_ARRIVAL_BEFORE_USAGE, latest_arrival)
        for customer_id, usage_date, latest_arrival in conn.execute(
            """
            select customer_id, usage_date, max(arrival_date)
            from ingest.usage_event_lines
            where status = 'accepted' and usage_date in (select unnest(?::date[]))
            group by customer_id, usage_date
            """,
            [dates],
        ).fetchall()
    }
    candidates = {
        first + timedelta(days=offset)
        for first, last in spans.values()
        for offset in range((last - first).days + 1)
    }
    outstanding = sorted(arrival_days_not_ingested(conn, raw_usage_dir, candidates))
    unsettled = {}
    for key, (first, last) in spans.items():
        waiting = tuple(day for day in outstanding if first <= day <= last)
        if waiting:
            unsettled[key] = waiting
    return unsettled


def hold_unsettled(
    slots: Iterable[MeterSlot], unsettled: Mapping[CustomerDay, tuple[date, ...]]
) -> tuple[list[MeterSlot], list[HeldSlot]]:
    """The slots that may be sent now, and those held with the arrival days they wait for."""
    sendable: list[MeterSlot] = []
    held: list[HeldSlot] = []
    for slot in slots:
        waiting = unsettled.get((slot.customer_id, slot.usage_date))
        if waiting:
            held.append(HeldSlot(slot.slot_id, slot.usage_date, slot.quantity, waiting))
        else:
            sendable.append(slot)
    return sendable, held
