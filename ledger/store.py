"""The ledger's PostgreSQL store: idempotent posting, balances and verification."""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal
from types import TracebackType

import psycopg

from ledger.migrations import migrate
from ledger.model import EXACT, Transaction


class LedgerConflictError(RuntimeError):
    """A key was posted before with other content (like TigerBeetle's exists_with_different_*)."""


@dataclass(frozen=True)
class PostResult:
    created: int
    existing: int


@dataclass(frozen=True)
class CauseTotal:
    revisions: int
    amount_by_account: dict[str, Decimal]
    currency: str


@dataclass(frozen=True)
class VerifyReport:
    transactions: int
    entries: int
    unbalanced_transactions: list[str]
    content_hash: str


class Ledger:
    def __init__(self, conn: psycopg.Connection) -> None:
        self._conn = conn

    @classmethod
    def connect(cls, url: str) -> Ledger:
        """Connect and bring the schema up to date (migrations run at most once each)."""
        conn = psycopg.connect(url, autocommit=True)
        try:
            migrate(conn)
        except BaseException:
            conn.close()
            raise
        return cls(conn)

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def post_many(self, transactions: Iterable[Transaction]) -> PostResult:
        """Post all or nothing. A key already posted with the same content is not posted again.

        A key posted before with other content raises ``LedgerConflictError`` and the whole batch
        is rolled back. Rows are written in a fixed order (accounts by name, transactions by key)
        so that concurrent writers with overlapping batches wait for each other, never deadlock.
        """
        batch = list(transactions)
        for transaction in batch:
            if not isinstance(transaction, Transaction):
                raise TypeError(f"post_many takes Transaction values, not {transaction!r}")
        if not batch:
            return PostResult(created=0, existing=0)
        batch.sort(key=lambda transaction: transaction.key)
        account_currency: dict[str, str] = {}
        for transaction in batch:
            for entry in transaction.entries:
                account_currency.setdefault(entry.account, entry.currency)
        created = existing = 0
        entry_rows: list[tuple[int, str, Decimal, str]] = []
        with self._conn.transaction(), self._conn.cursor() as cursor:
            if account_currency:
                cursor.executemany(
                    "insert into ledger.accounts (name, currency) values (%s, %s) "
                    "on conflict (name) do nothing",
                    sorted(account_currency.items()),
                )
            hashes = [transaction.content_hash() for transaction in batch]
            # One pipelined round trip for the whole batch; a key already posted returns no id.
            cursor.executemany(
                """
                insert into ledger.transactions (transaction_key, kind, cause_type, cause_id,
                    effective_at, content_hash, metadata)
                values (%s, %s, %s, %s, %s, %s, %s)
                on conflict (transaction_key) do nothing
                returning id
                """,
                [
                    (
                        transaction.key,
                        transaction.kind,
                        transaction.cause_type,
                        transaction.cause_id,
                        transaction.effective_at,
                        content_hash,
                        json.dumps(dict(transaction.metadata), sort_keys=True),
                    )
                    for transaction, content_hash in zip(batch, hashes, strict=True)
                ],
                returning=True,
            )
            new_ids: list[int | None] = []
            while True:
                row = cursor.fetchone()
                new_ids.append(row[0] if row else None)
                if not cursor.nextset():
                    break
            already_posted = [
                t.key for t, new_id in zip(batch, new_ids, strict=True) if new_id is None
            ]
            stored_hashes = (
                dict(
                    cursor.execute(
                        "select transaction_key, content_hash from ledger.transactions "
                        "where transaction_key = any(%s)",
                        [already_posted],
                    ).fetchall()
                )
                if already_posted
                else {}
            )
            for transaction, content_hash, new_id in zip(batch, hashes, new_ids, strict=True):
                if new_id is None:
                    if stored_hashes.get(transaction.key) != content_hash:
                        raise LedgerConflictError(
                            f"Ledger key {transaction.key} exists with different content; "
                            "a posted transaction is never changed. Post a correction under a "
                            "new key. Nothing of this batch was posted."
                        )
                    existing += 1
                    continue
                entry_rows.extend(
                    (new_id, entry.account, entry.amount_minor, entry.currency)
                    for entry in transaction.entries
                )
                created += 1
            if entry_rows:
                cursor.executemany(
                    "insert into ledger.entries (transaction_id, account, amount_minor, "
                    "currency) values (%s, %s, %s, %s)",
                    entry_rows,
                )
        return PostResult(created=created, existing=existing)

    def cause_totals(self, kind: str) -> dict[str, CauseTotal]:
        """Per cause of ``kind``: how many transactions, and their entries summed per account."""
        revisions = dict(
            self._conn.execute(
                "select cause_id, count(*) from ledger.transactions where kind = %s "
                "group by cause_id",
                [kind],
            ).fetchall()
        )
        rows = self._conn.execute(
            """
            select t.cause_id, e.account, sum(e.amount_minor), min(e.currency)
            from ledger.transactions t join ledger.entries e on e.transaction_id = t.id
            where t.kind = %s
            group by t.cause_id, e.account
            order by t.cause_id, e.account
            """,
            [kind],
        ).fetchall()
        amounts: dict[str, dict[str, Decimal]] = defaultdict(dict)
        currencies: dict[str, str] = {}
        for cause_id, account, amount, currency in rows:
            amounts[cause_id][account] = Decimal(amount)
            currencies.setdefault(cause_id, currency)
        return {
            cause_id: CauseTotal(
                revisions=int(count),
                amount_by_account=dict(amounts[cause_id]),
                currency=currencies.get(cause_id, ""),
            )
            for cause_id, count in sorted(revisions.items())
        }

    def balance(self, account: str, currency: str) -> Decimal:
        """The sum of the account's entries in ``currency`` (debits positive), exact."""
        row = self._conn.execute(
            "select coalesce(sum(amount_minor), 0) from ledger.entries "
            "where account = %s and currency = %s",
            [account, currency],
        ).fetchone()
        return Decimal(row[0]).normalize(EXACT) if row else Decimal(0)

    def verify(self) -> VerifyReport:
        """Re-check every invariant from the stored rows; hash the content in key order."""
        counts = self._conn.execute(
            "select (select count(*) from ledger.transactions), "
            "(select count(*) from ledger.entries)"
        ).fetchone()
        unbalanced = self._conn.execute(
            """
            select t.transaction_key from ledger.transactions t
            left join ledger.entries e on e.transaction_id = t.id
            group by t.id, t.transaction_key
            having count(e.id) < 2 or exists (
                select 1 from ledger.entries e2 where e2.transaction_id = t.id
                group by e2.currency having sum(e2.amount_minor) <> 0)
            order by t.transaction_key
            """
        ).fetchall()
        digest = hashlib.sha256()
        with self._conn.cursor() as cursor:
            cursor.execute(
                "select transaction_key, content_hash from ledger.transactions "
                'order by transaction_key collate "C"'
            )
            for key, content_hash in cursor:
                digest.update(f"{key}\t{content_hash}\n".encode())
        assert counts is not None
        return VerifyReport(
            transactions=int(counts[0]),
            entries=int(counts[1]),
            unbalanced_transactions=[key for (key,) in unbalanced],
            content_hash=digest.hexdigest(),
        )
