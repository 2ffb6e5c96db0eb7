"""The ledger's PostgreSQL store: idempotent posting, balances and verification.

The database enforces the invariants (append-only, balanced, sealed transactions, one currency
per account, guarded accounts); this module adds idempotency by key and content hash.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from types import TracebackType

import psycopg

from ledger import verification
from ledger.errors import LedgerBalanceError, LedgerConflictError, LedgerValidationError
from ledger.migrations import migrate
from ledger.model import Account, Transaction, simplest

__all__ = [
    "CauseTotal",
    "Ledger",
    "LedgerBalanceError",
    "LedgerConflictError",
    "PostResult",
    "VerifyReport",
]

MAX_KEYS_NAMED_IN_ERRORS = 10
GUARDED_ACCOUNT_CONSTRAINT = "accounts_must_not_go_negative"


@dataclass(frozen=True)
class PostResult:
    created: int
    existing: int


@dataclass(frozen=True)
class CauseTotal:
    """All transactions of one kind and cause: how many, and their entries summed per account."""

    revisions: int
    amount_by_account: dict[str, Decimal]
    currency: str  # the cause's single currency (a cause with several is refused)


@dataclass(frozen=True)
class VerifyReport:
    transactions: int
    entries: int
    unbalanced_transactions: list[str]
    content_hash: str
    # Keys whose stored content hash no longer matches their stored rows (only when recomputed).
    hash_mismatched_transactions: list[str] = field(default_factory=list)
    # Accounts with must_not_go_negative whose balance on their normal side is below zero.
    negative_guarded_accounts: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Every invariant holds."""
        return not (
            self.unbalanced_transactions
            or self.hash_mismatched_transactions
            or self.negative_guarded_accounts
        )


class Ledger:
    """A ledger over one autocommit psycopg connection; every method is its own transaction."""

    def __init__(self, conn: psycopg.Connection) -> None:
        if not conn.autocommit:
            raise ValueError(
                "Ledger needs a connection in autocommit mode: it opens its own database "
                "transactions (psycopg.connect(url, autocommit=True), or use Ledger.connect)."
            )
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

    def open_accounts(self, accounts: Iterable[Account]) -> PostResult:
        """Declare accounts before their first entry, all or nothing.

        Opening an account again with the same attributes counts as existing; with other
        attributes it raises ``LedgerConflictError``: accounts never change once opened.
        """
        wanted = sorted(accounts, key=lambda account: account.name)
        for account in wanted:
            if not isinstance(account, Account):
                raise TypeError(f"open_accounts takes Account values, not {account!r}")
        if not wanted:
            return PostResult(created=0, existing=0)
        rows = [(a.name, a.currency, a.normal_side, a.must_not_go_negative) for a in wanted]
        with self._conn.transaction(), self._conn.cursor() as cursor:
            created = cursor.execute(
                "insert into ledger.accounts (name, currency, normal_side, must_not_go_negative) "
                "select * from unnest(%s::text[], %s::text[], %s::text[], %s::boolean[]) "
                "on conflict do nothing returning name",
                [list(column) for column in zip(*rows, strict=True)],
            ).fetchall()
            stored = cursor.execute(
                "select name, currency, normal_side, must_not_go_negative from ledger.accounts "
                "where name = any(%s)",
                [[row[0] for row in rows]],
            ).fetchall()
            stored_rows = set(stored)
            differing = sorted({row[0] for row in rows if row not in stored_rows})
            if differing:
                raise LedgerConflictError(
                    f"Accounts {_some(differing)} exist with other attributes (or are opened "
                    "twice differently in this call); an account never changes. Open a new "
                    "account under another name. None of these accounts was opened."
                )
        return PostResult(created=len(created), existing=len(rows) - len(created))

    def post_many(self, transactions: Iterable[Transaction]) -> PostResult:
        """Post all or nothing. A key already posted with the same content is not posted again.

        A key posted before with other content raises ``LedgerConflictError`` and the whole batch
        is rolled back. Rows are written and locked in a fixed order (accounts by name,
        transactions by key) so concurrent writers with overlapping batches wait for each other
        and never deadlock. Accounts not opened before are opened as unguarded debit accounts.
        """
        batch = list(transactions)
        for transaction in batch:
            if not isinstance(transaction, Transaction):
                raise TypeError(f"post_many takes Transaction values, not {transaction!r}")
        if not batch:
            return PostResult(created=0, existing=0)
        batch.sort(key=lambda transaction: transaction.key)
        account_currency = _account_currencies(batch)
        hashes = [transaction.content_hash() for transaction in batch]
        try:
            with self._conn.transaction(), self._conn.cursor() as cursor:
                _ensure_accounts(cursor, account_currency)
                new_ids = _insert_transactions(cursor, batch, hashes)
                existing = _check_already_posted(cursor, batch, hashes, new_ids)
                _insert_entries(cursor, batch, new_ids)
        except psycopg.errors.CheckViolation as error:
            if error.diag.constraint_name == GUARDED_ACCOUNT_CONSTRAINT:
                raise LedgerBalanceError(
                    f"{error.diag.message_primary}. Nothing of this batch was posted."
                ) from error
            raise
        return PostResult(created=len(batch) - existing, existing=existing)

    def cause_totals(self, kind: str) -> dict[str, CauseTotal]:
        """Per cause of ``kind``: how many transactions, and their entries summed per account.

        One consistent snapshot, so the revision count and the amounts always agree.
        """
        with self._snapshot() as cursor:
            revisions = dict(
                cursor.execute(
                    "select cause_id, count(*) from ledger.transactions where kind = %s "
                    "group by cause_id",
                    [kind],
                ).fetchall()
            )
            rows = cursor.execute(
                """
                select t.cause_id, e.account, e.currency, sum(e.amount_minor)
                from ledger.transactions t join ledger.entries e on e.transaction_id = t.id
                where t.kind = %s
                group by t.cause_id, e.account, e.currency
                """,
                [kind],
            ).fetchall()
        amounts: dict[str, dict[str, Decimal]] = defaultdict(dict)
        currencies: dict[str, set[str]] = defaultdict(set)
        for cause_id, account, currency, amount in rows:
            amounts[cause_id][account] = Decimal(amount)
            currencies[cause_id].add(currency)
        several = sorted(cause_id for cause_id, found in currencies.items() if len(found) > 1)
        if several:
            raise ValueError(
                f"Causes {_some(several)} of kind {kind!r} have entries in several currencies; "
                "cause_totals gives one currency per cause."
            )
        return {
            cause_id: CauseTotal(
                revisions=int(count),
                amount_by_account=dict(sorted(amounts[cause_id].items())),
                currency=min(currencies[cause_id], default=""),
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
        assert row is not None
        return simplest(Decimal(row[0]))

    def verify(self, *, recompute_hashes: bool = False) -> VerifyReport:
        """Re-check every invariant from the stored rows, in one snapshot.

        The content hash is a sha256 over every transaction's key and content hash in key order:
        two ledgers with the same transactions have the same hash, whatever the posting order,
        batches, ids or posting times. By default the stored hashes are used: the database keeps
        posted rows unchanged, and this reads little. ``recompute_hashes=True`` (an audit, about
        25 µs a transaction) recomputes each hash from the stored rows and reports mismatches.
        """
        with self._snapshot() as cursor:
            counts = cursor.execute(
                "select (select count(*) from ledger.transactions), "
                "(select count(*) from ledger.entries)"
            ).fetchone()
            assert counts is not None
            unbalanced = verification.unbalanced_transaction_keys(cursor)
            negative = verification.negative_guarded_accounts(cursor)
            if recompute_hashes:
                content_hash, mismatched = verification.recomputed_ledger_hash(self._conn)
            else:
                content_hash, mismatched = verification.stored_ledger_hash(self._conn), []
        return VerifyReport(
            transactions=int(counts[0]),
            entries=int(counts[1]),
            unbalanced_transactions=unbalanced,
            content_hash=content_hash,
            hash_mismatched_transactions=mismatched,
            negative_guarded_accounts=negative,
        )

    @contextmanager
    def _snapshot(self) -> Iterator[psycopg.Cursor]:
        """A read-only repeatable-read transaction: several queries, one state of the ledger."""
        with self._conn.transaction(), self._conn.cursor() as cursor:
            cursor.execute("set transaction isolation level repeatable read, read only")
            yield cursor


def _some(names: Sequence[str]) -> str:
    """At most a few names for an error message, and how many there are in all."""
    shown = ", ".join(names[:MAX_KEYS_NAMED_IN_ERRORS])
    more = len(names) - MAX_KEYS_NAMED_IN_ERRORS
    return f"{shown} (and {more} more)" if more > 0 else shown


def _account_currencies(batch: Sequence[Transaction]) -> dict[str, str]:
    """Each account of the batch and its one currency; an account in two currencies is refused."""
    account_currency: dict[str, str] = {}
    for transaction in batch:
        for entry in transaction.entries:
            known = account_currency.setdefault(entry.account, entry.currency)
            if known != entry.currency:
                raise LedgerValidationError(
                    f"Account {entry.account} is used in {known} and {entry.currency} in one "
                    f"batch (transaction {transaction.key}); an account holds one currency. "
                    "Use one account per currency (e.g. a ':<currency>' suffix)."
                )
    return account_currency


def _ensure_accounts(cursor: psycopg.Cursor, account_currency: dict[str, str]) -> None:
    """Open missing accounts, check currencies, and lock guarded accounts in name order."""
    names = sorted(account_currency)
    # No conflict target: both unique indexes (name; name and currency) must arbitrate, or a
    # concurrent writer opening the same account fails on the one not named.
    cursor.execute(
        "insert into ledger.accounts (name, currency) "
        "select * from unnest(%s::text[], %s::text[]) order by 1 "
        "on conflict do nothing",
        [names, [account_currency[name] for name in names]],
    )
    stored = cursor.execute(
        "select name, currency, must_not_go_negative from ledger.accounts where name = any(%s)",
        [names],
    ).fetchall()
    wrong = sorted(
        f"{name} holds {currency}, not {account_currency[name]}"
        for name, currency, _ in stored
        if currency != account_currency[name]
    )
    if wrong:
        raise LedgerValidationError(
            f"Entries in another currency than their account: {_some(wrong)}. An account holds "
            "one currency; use one account per currency. Nothing of this batch was posted."
        )
    guarded = sorted(name for name, _, must_not_go_negative in stored if must_not_go_negative)
    if guarded:
        # The commit-time check takes these locks too; taking them now, sorted, avoids deadlocks.
        cursor.execute(
            'select 1 from ledger.accounts where name = any(%s) order by name collate "C" '
            "for no key update",
            [guarded],
        )


def _insert_transactions(
    cursor: psycopg.Cursor, batch: Sequence[Transaction], hashes: Sequence[str]
) -> list[int | None]:
    """Insert each key not posted yet; a key already posted (or being posted) returns None.

    ON CONFLICT waits for a concurrent writer of the same key to finish, so the key is then
    either ours or visibly theirs, never posted twice. One pipelined round trip for the batch.
    """
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
                t.key,
                t.kind,
                t.cause_type,
                t.cause_id,
                t.effective_at,
                content_hash,
                json.dumps(dict(t.metadata), sort_keys=True),
            )
            for t, content_hash in zip(batch, hashes, strict=True)
        ],
        returning=True,
    )
    new_ids: list[int | None] = []
    while True:
        row = cursor.fetchone()
        new_ids.append(row[0] if row else None)
        if not cursor.nextset():
            break
    assert len(new_ids) == len(batch)
    return new_ids


def _check_already_posted(
    cursor: psycopg.Cursor,
    batch: Sequence[Transaction],
    hashes: Sequence[str],
    new_ids: Sequence[int | None],
) -> int:
    """Count keys posted before with the same content; raise if any has other content."""
    already_posted = [t.key for t, new_id in zip(batch, new_ids, strict=True) if new_id is None]
    if not already_posted:
        return 0
    stored_hashes = dict(
        cursor.execute(
            "select transaction_key, content_hash from ledger.transactions "
            "where transaction_key = any(%s)",
            [already_posted],
        ).fetchall()
    )
    conflicting = sorted(
        {
            t.key
            for t, content_hash, new_id in zip(batch, hashes, new_ids, strict=True)
            if new_id is None and stored_hashes.get(t.key) != content_hash
        }
    )
    if conflicting:
        raise LedgerConflictError(
            f"Ledger keys exist with different content: {_some(conflicting)}. A posted "
            "transaction is never changed; post a correction under a new key. Nothing of this "
            "batch was posted."
        )
    return len(already_posted)


def _insert_entries(
    cursor: psycopg.Cursor, batch: Sequence[Transaction], new_ids: Sequence[int | None]
) -> None:
    rows = [
        (new_id, entry.account, entry.amount_minor, entry.currency)
        for transaction, new_id in zip(batch, new_ids, strict=True)
        if new_id is not None
        for entry in transaction.entries
    ]
    if rows:
        cursor.executemany(
            "insert into ledger.entries (transaction_id, account, amount_minor, currency) "
            "values (%s, %s, %s, %s)",
            rows,
        )
