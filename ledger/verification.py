"""Re-checking the ledger from its stored rows, and hashing its whole content.

Run inside one repeatable-read snapshot (``Ledger.verify``), so counts, checks and hash
describe the same state of the ledger.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from decimal import Decimal

import psycopg

from ledger.model import content_hash_of

# Rows streamed per round trip when hashing the whole ledger.
HASH_FETCH_ROWS = 10_000

UNBALANCED_SQL = """
with per_currency as (
    select transaction_id, count(*) as entry_count, sum(amount_minor) <> 0 as unbalanced
    from ledger.entries group by transaction_id, currency
), per_transaction as (
    select transaction_id, sum(entry_count) as entry_count, bool_or(unbalanced) as unbalanced
    from per_currency group by transaction_id
)
select t.transaction_key
from ledger.transactions t left join per_transaction p on p.transaction_id = t.id
where p.transaction_id is null or p.entry_count < 2 or p.unbalanced
order by t.transaction_key collate "C"
"""

NEGATIVE_GUARDED_SQL = """
select a.name
from ledger.accounts a join ledger.entries e on e.account = a.name
where a.must_not_go_negative
group by a.name, a.normal_side
having (a.normal_side = 'debit' and sum(e.amount_minor) < 0)
    or (a.normal_side = 'credit' and sum(e.amount_minor) > 0)
order by a.name collate "C"
"""

# Key order in the "C" collation: byte order, the same on every server whatever its locale.
STORED_HASHES_SQL = """
select transaction_key, content_hash from ledger.transactions
order by transaction_key collate "C"
"""

RECOMPUTE_SQL = """
select t.transaction_key, t.kind, t.cause_type, t.cause_id, t.effective_at, t.metadata,
    t.content_hash, e.account, e.amount_minor, e.currency, o.transaction_key
from ledger.transactions t left join ledger.entries e on e.transaction_id = t.id
    left join ledger.transactions o on o.id = t.reverses_id
order by t.transaction_key collate "C", e.id
"""


def unbalanced_transaction_keys(cursor: psycopg.Cursor) -> list[str]:
    """Transactions with fewer than two entries or not summing to zero in some currency."""
    return [key for (key,) in cursor.execute(UNBALANCED_SQL).fetchall()]


GLOBAL_SUM_SQL = """
select currency, sum(amount_minor) from ledger.entries group by currency
having sum(amount_minor) <> 0 order by currency
"""

ORPHAN_ENTRIES_SQL = """
select e.id from ledger.entries e
where not exists (select 1 from ledger.transactions t where t.id = e.transaction_id)
    or not exists (
        select 1 from ledger.accounts a where a.name = e.account and a.currency = e.currency)
order by e.id limit 100
"""


def global_imbalance(cursor: psycopg.Cursor) -> dict[str, Decimal]:
    """Per currency, the sum of all entries where it is not zero: empty in a sound ledger."""
    return {currency: Decimal(total) for currency, total in cursor.execute(GLOBAL_SUM_SQL)}


def orphan_entries(cursor: psycopg.Cursor) -> list[int]:
    """Entries (at most 100) without their transaction or without their account."""
    return [int(entry_id) for (entry_id,) in cursor.execute(ORPHAN_ENTRIES_SQL)]


def negative_guarded_accounts(cursor: psycopg.Cursor) -> list[str]:
    """Accounts with must_not_go_negative whose balance on their normal side is below zero."""
    return [name for (name,) in cursor.execute(NEGATIVE_GUARDED_SQL).fetchall()]


def stored_ledger_hash(conn: psycopg.Connection) -> str:
    """sha256 over "<key>\\t<stored content hash>\\n" for every transaction, in key order."""
    digest = hashlib.sha256()
    with conn.cursor(name="ledger_stored_hashes") as cursor:
        cursor.itersize = HASH_FETCH_ROWS
        cursor.execute(STORED_HASHES_SQL)
        for key, content_hash in cursor:
            digest.update(f"{key}\t{content_hash}\n".encode())
    return digest.hexdigest()


def recomputed_ledger_hash(conn: psycopg.Connection) -> tuple[str, list[str]]:
    """The same hash with each transaction's hash recomputed from its rows, and the keys whose
    stored hash differs from their rows."""
    digest = hashlib.sha256()
    mismatched: list[str] = []
    with conn.cursor(name="ledger_recomputed_hashes") as cursor:
        cursor.itersize = HASH_FETCH_ROWS
        cursor.execute(RECOMPUTE_SQL)
        for key, rows in _grouped_by_key(cursor):
            first = rows[0]
            recomputed = content_hash_of(
                key=key,
                kind=first[1],
                cause_type=first[2],
                cause_id=first[3],
                effective_at=first[4],
                metadata=first[5],
                entries=[(row[7], row[8], row[9]) for row in rows if row[7] is not None],
                reverses=first[10],
            )
            if recomputed != first[6]:
                mismatched.append(key)
            digest.update(f"{key}\t{recomputed}\n".encode())
    return digest.hexdigest(), mismatched


def _grouped_by_key(rows: Iterable[tuple]) -> Iterator[tuple[str, list[tuple]]]:
    """Consecutive rows with the same first column, as (key, rows)."""
    key: str | None = None
    group: list[tuple] = []
    for row in rows:
        if row[0] != key and group:
            yield key, group  # type: ignore[misc]
            group = []
        key = row[0]
        group.append(row)
    if group:
        yield key, group  # type: ignore[misc]
