"""The ledger's PostgreSQL store: idempotent posting, balances and verification.

The database enforces the invariants (append-only, balanced, sealed transactions, one currency
per account, guarded accounts); this module adds idempotency by key and content hash.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from types import TracebackType

import psycopg

from crash_points import crash_point
from ledger import verification
from ledger.accounts import chart_account
from ledger.errors import LedgerBalanceError, LedgerConflictError, LedgerValidationError
from ledger.migrations import migrate
from ledger.model import Account, Transaction, simplest

__all__ = [
    "CauseTotal",
    "DunningEvent",
    "Ledger",
    "LedgerBalanceError",
    "LedgerConflictError",
    "PostResult",
    "VerifyReport",
]

MAX_KEYS_NAMED_IN_ERRORS = 10
GUARDED_ACCOUNT_CONSTRAINT = "accounts_must_not_go_negative"
KEY_CONSTRAINT = "transactions_transaction_key_key"
# A batch is retried when concurrent writers committed some of its keys in the meantime.
MAX_RACE_RETRIES = 5


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


DUNNING_STATES = ("payment_failed", "retry_scheduled", "recovered", "uncollectible")
# Which of two steps of one invoice in the same second is the later one: a retry is scheduled
# before the final failure, an invoice is written off after it, and a payment can still arrive
# after a write-off (never the reverse).
DUNNING_STATES_IN_LIFE_ORDER = ("retry_scheduled", "payment_failed", "uncollectible", "recovered")


@dataclass(frozen=True)
class DunningEvent:
    """One step of collecting an invoice (Stripe's invoice.payment_failed, a retry, ...)."""

    event_key: str  # e.g. the Stripe event id: a redelivered webhook is recorded once
    invoice_id: str
    customer_id: str
    state: str
    attempt: int
    occurred_at: datetime
    detail: Mapping[str, object] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.state not in DUNNING_STATES:
            raise LedgerValidationError(
                f"Dunning event {self.event_key}: state {self.state!r} is not one of "
                f"{', '.join(DUNNING_STATES)}."
            )
        if self.occurred_at.utcoffset() is None:
            raise LedgerValidationError(
                f"Dunning event {self.event_key}: occurred_at needs a time zone."
            )


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
    # Per currency, the sum of every entry when it is not zero (double entry says it is).
    global_imbalance: dict[str, Decimal] = field(default_factory=dict)
    # Entries whose transaction does not exist, or whose account is not open in their currency.
    orphan_entries: list[int] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Every invariant holds."""
        return not (
            self.unbalanced_transactions
            or self.hash_mismatched_transactions
            or self.negative_guarded_accounts
            or self.global_imbalance
            or self.orphan_entries
        )

    def problems(self) -> list[str]:
        """Each violated invariant, in words, for a report or an error."""
        found = []
        if self.unbalanced_transactions:
            found.append(f"unbalanced transactions: {_some(self.unbalanced_transactions)}")
        if self.hash_mismatched_transactions:
            found.append(
                "transactions whose rows no longer match their content hash: "
                f"{_some(self.hash_mismatched_transactions)}"
            )
        if self.negative_guarded_accounts:
            found.append(f"guarded accounts below zero: {_some(self.negative_guarded_accounts)}")
        if self.global_imbalance:
            found.append(f"entries do not sum to zero: {self.global_imbalance}")
        if self.orphan_entries:
            found.append(f"orphan entries (ids): {_some([str(i) for i in self.orphan_entries])}")
        return found


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
        and never deadlock. Accounts not opened before are opened as the chart of accounts
        (``ledger.accounts``) defines them; other names as unguarded debit accounts.
        """
        batch = list(transactions)
        for transaction in batch:
            if not isinstance(transaction, Transaction):
                raise TypeError(f"post_many takes Transaction values, not {transaction!r}")
        if not batch:
            return PostResult(created=0, existing=0)
        batch.sort(key=lambda transaction: transaction.key)
        keys = list(dict.fromkeys(transaction.key for transaction in batch))  # sorted, once each
        for attempt in range(1, MAX_RACE_RETRIES + 1):
            try:
                new_ids = self._post_once(batch, keys)
                break
            except psycopg.errors.UniqueViolation as error:
                # A concurrent writer committed one of our keys between our look and our write
                # (its commit is what we waited for): look again, now seeing its keys.
                if error.diag.constraint_name != KEY_CONSTRAINT or attempt == MAX_RACE_RETRIES:
                    raise
            except psycopg.errors.CheckViolation as error:
                if error.diag.constraint_name == GUARDED_ACCOUNT_CONSTRAINT:
                    raise LedgerBalanceError(
                        f"{error.diag.message_primary}. Nothing of this batch was posted."
                    ) from error
                raise
        return PostResult(created=len(new_ids), existing=len(batch) - len(new_ids))

    def _post_once(self, batch: Sequence[Transaction], keys: Sequence[str]) -> dict[str, int]:
        """One attempt in one database transaction; returns the ids of the keys it wrote.
        ``batch`` is sorted by key; ``keys`` are its keys, once each."""
        with self._conn.transaction(), self._conn.cursor() as cursor:
            keys_digest = _keys_digest(keys)
            posted_content = _posted_batch_content(cursor, keys_digest)
            if posted_content is not None and posted_content == _content_digest(batch):
                return {}  # this very batch was posted before: a replay
            stored = _stored_hashes(cursor, keys)
            new = _not_posted_yet(batch, stored)
            if not new:
                return {}
            _ensure_accounts(cursor, _account_currencies(batch))
            new_ids = _copy_transactions(cursor, new)
            crash_point("ledger.mid_batch")
            _insert_entries(cursor, new, new_ids)
            _record_posted_batch(cursor, keys_digest, _content_digest(batch), len(new))
            return new_ids

    def cause_totals(
        self, kind: str, *, effective_at: Iterable[datetime] | None = None
    ) -> dict[str, CauseTotal]:
        """Per cause of ``kind``: how many transactions, and their entries summed per account.

        ``effective_at`` limits it to transactions effective at those instants (a run reads the
        usage dates it touches, not the whole ledger). One consistent snapshot, so the revision
        count and the amounts always agree.
        """
        instants = None if effective_at is None else sorted(set(effective_at))
        where = "t.kind = %s" + ("" if instants is None else " and t.effective_at = any(%s)")
        params: list[object] = [kind] if instants is None else [kind, instants]
        with self._snapshot() as cursor:
            revisions = dict(
                cursor.execute(
                    f"select t.cause_id, count(*) from ledger.transactions t where {where} "
                    "group by t.cause_id",
                    params,
                ).fetchall()
            )
            rows = cursor.execute(
                f"""
                select t.cause_id, e.account, e.currency, sum(e.amount_minor)
                from ledger.transactions t join ledger.entries e on e.transaction_id = t.id
                where {where}
                group by t.cause_id, e.account, e.currency
                """,
                params,
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

    def balances(
        self,
        *,
        account_prefix: str = "",
        as_of: datetime | None = None,
        known_at: datetime | None = None,
    ) -> dict[tuple[str, str], Decimal]:
        """Balance per (account, currency) of the accounts whose name starts with
        ``account_prefix``: the sum of their entries (debits positive), exact.

        ``as_of`` counts only transactions effective at or before it (business time: "what did
        the customer owe on 1 March?"); ``known_at`` only those posted at or before it (system
        time: "what did the ledger say on 1 March?"). Both together answer "what did we believe
        on date B about date A".
        """
        rows = self._conn.execute(
            """
            select e.account, e.currency, sum(e.amount_minor)
            from ledger.entries e join ledger.transactions t on t.id = e.transaction_id
            where starts_with(e.account, %(prefix)s)
                and (%(as_of)s::timestamptz is null or t.effective_at <= %(as_of)s)
                and (%(known_at)s::timestamptz is null or t.posted_at <= %(known_at)s)
            group by e.account, e.currency
            order by e.account collate "C", e.currency
            """,
            {"prefix": account_prefix, "as_of": as_of, "known_at": known_at},
        ).fetchall()
        return {(account, currency): simplest(Decimal(total)) for account, currency, total in rows}

    def record_dunning_event(self, event: DunningEvent) -> bool:
        """Record a step of collecting an invoice; True if new. Idempotent on ``event_key``: the
        same event again is a no-op, other content under the same key raises a conflict."""
        detail = json.dumps(dict(event.detail), sort_keys=True)
        with self._conn.transaction(), self._conn.cursor() as cursor:
            inserted = cursor.execute(
                "insert into ledger.dunning_events (event_key, invoice_id, customer_id, state, "
                "attempt, occurred_at, detail) values (%s, %s, %s, %s, %s, %s, %s) "
                "on conflict (event_key) do nothing returning id",
                [
                    event.event_key,
                    event.invoice_id,
                    event.customer_id,
                    event.state,
                    event.attempt,
                    event.occurred_at,
                    detail,
                ],
            ).fetchone()
            if inserted is not None:
                return True
            stored = cursor.execute(
                "select invoice_id, customer_id, state, attempt, occurred_at, detail::text "
                "from ledger.dunning_events where event_key = %s",
                [event.event_key],
            ).fetchone()
        expected = (event.invoice_id, event.customer_id, event.state, event.attempt)
        assert stored is not None
        if (
            stored[:4] != expected
            or stored[4] != event.occurred_at
            or json.loads(stored[5]) != dict(event.detail)
        ):
            raise LedgerConflictError(
                f"Dunning event {event.event_key} was recorded before with other content; "
                "record the new step under its own key."
            )
        return False

    def dunning_state(self, invoice_id: str) -> DunningEvent | None:
        """The latest collection step of an invoice, or None: by when it happened, then (steps
        in the same second, as Stripe sends a last failure and its write-off) by the order of an
        invoice's life, never by which webhook arrived last."""
        row = self._conn.execute(
            "select event_key, invoice_id, customer_id, state, attempt, occurred_at, detail "
            "from ledger.dunning_events where invoice_id = %s "
            "order by occurred_at desc, array_position(%s::text[], state) desc, attempt desc, "
            "event_key desc limit 1",
            [invoice_id, list(DUNNING_STATES_IN_LIFE_ORDER)],
        ).fetchone()
        if row is None:
            return None
        return DunningEvent(
            event_key=row[0],
            invoice_id=row[1],
            customer_id=row[2],
            state=row[3],
            attempt=row[4],
            occurred_at=row[5],
            detail=row[6],
        )

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
            imbalance = verification.global_imbalance(cursor)
            orphans = verification.orphan_entries(cursor)
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
            global_imbalance=imbalance,
            orphan_entries=orphans,
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
    """Open missing accounts as the chart defines them, check currencies, and lock guarded
    accounts in name order."""
    names = sorted(account_currency)
    # No conflict target: both unique indexes (name; name and currency) must arbitrate, or a
    # concurrent writer opening the same account fails on the one not named.
    opened = [chart_account(name, account_currency[name]) for name in names]
    cursor.execute(
        "insert into ledger.accounts (name, currency, normal_side, must_not_go_negative) "
        "select * from unnest(%s::text[], %s::text[], %s::text[], %s::boolean[]) order by 1 "
        "on conflict do nothing",
        [
            names,
            [a.currency for a in opened],
            [a.normal_side for a in opened],
            [a.must_not_go_negative for a in opened],
        ],
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


def _keys_digest(keys: Sequence[str]) -> bytes:
    """sha256 of a batch's keys, sorted, each after its length (so that no two lists of keys
    read the same): the batch's name in ``ledger.posted_batches``."""
    return hashlib.sha256("".join([f"{len(key)}:{key}" for key in keys]).encode()).digest()


def _content_digest(batch: Sequence[Transaction]) -> bytes:
    """sha256 of the content hashes of a batch sorted by key (each hash covers its key and
    content). A key twice with the same content counts once; twice with other content, it
    has two hashes, and so a digest no posted batch has (such a batch cannot be posted)."""
    hashes: list[str] = []
    previous_key, previous_hash = None, None
    for transaction in batch:
        content_hash = transaction.content_hash()
        if transaction.key != previous_key or content_hash != previous_hash:
            hashes.append(content_hash)
        previous_key, previous_hash = transaction.key, content_hash
    return hashlib.sha256("".join(hashes).encode()).digest()


def _posted_batch_content(cursor: psycopg.Cursor, keys_digest: bytes) -> bytes | None:
    row = cursor.execute(
        "select content_digest from ledger.posted_batches where keys_digest = %s",
        [keys_digest],
    ).fetchone()
    return None if row is None else bytes(row[0])


def _record_posted_batch(
    cursor: psycopg.Cursor, keys_digest: bytes, content: bytes, transactions: int
) -> None:
    """Note the batch as posted, in the database transaction that wrote it. The same keys with
    other content cannot have been posted (their transactions would conflict), so a row already
    there has this content."""
    cursor.execute(
        "insert into ledger.posted_batches (keys_digest, content_digest, transactions) "
        "values (%s, %s, %s) on conflict (keys_digest) do nothing",
        [keys_digest, content, transactions],
    )


def _stored_hashes(cursor: psycopg.Cursor, keys: Sequence[str]) -> dict[str, str]:
    """The content hash of each of ``keys`` already posted (one index lookup each)."""
    return dict(
        cursor.execute(
            # %b: the keys travel as a binary array, which PostgreSQL reads ~3x faster.
            "select transaction_key, content_hash from ledger.transactions "
            "where transaction_key = any(%b)",
            [list(keys)],
        ).fetchall()
    )


def _not_posted_yet(batch: Sequence[Transaction], stored: dict[str, str]) -> list[Transaction]:
    """The transactions to write: each key once, unless stored already with the same content.

    A key stored (or repeated in the batch) with other content is a conflict: nothing is posted.
    Content hashes of new keys are left for the COPY to compute, so that Python hashes the next
    rows while PostgreSQL inserts the previous ones.
    """
    new: dict[str, Transaction] = {}
    conflicting: set[str] = set()
    for transaction in batch:
        known = stored.get(transaction.key)
        if known is not None:
            if transaction.content_hash() != known:
                conflicting.add(transaction.key)
        elif transaction.key in new:
            if transaction.content_hash() != new[transaction.key].content_hash():
                conflicting.add(transaction.key)
        else:
            new[transaction.key] = transaction
    if conflicting:
        raise LedgerConflictError(
            f"Ledger keys exist with different content: {_some(sorted(conflicting))}. A posted "
            "transaction is never changed; post a correction under a new key. Nothing of this "
            "batch was posted."
        )
    return list(new.values())


def _copy_transactions(cursor: psycopg.Cursor, new: Sequence[Transaction]) -> dict[str, int]:
    """Write the new transactions by one COPY in key order, with ids drawn beforehand (so their
    entries and reversal links can name them); returns the ids by key.

    A reversal's original must be posted already or be in this batch. Two writers copying the
    same key: the second waits for the first's commit and then fails on the key, and
    ``post_many`` looks again.
    """
    drawn = cursor.execute(
        "select array(select nextval('ledger.transactions_id_seq') from generate_series(1, %s))",
        [len(new)],
    ).fetchone()
    assert drawn is not None
    ids: list[int] = drawn[0]  # one array: not a row (a tuple the cycle collector tracks) per id
    new_ids = {t.key: transaction_id for t, transaction_id in zip(new, ids, strict=True)}
    originals = sorted({t.reverses for t in new if t.reverses and t.reverses not in new_ids})
    if originals:
        new_ids_of_originals = dict(
            cursor.execute(
                "select transaction_key, id from ledger.transactions "
                "where transaction_key = any(%s)",
                [originals],
            ).fetchall()
        )
        missing = [
            f"{t.key} reverses {t.reverses}"
            for t in new
            if t.reverses and t.reverses not in new_ids and t.reverses not in new_ids_of_originals
        ]
        if missing:
            raise LedgerValidationError(
                f"Reversals of transactions that were never posted: {_some(missing)}. Post the "
                "original first (or in the same batch). Nothing of this batch was posted."
            )
    else:
        new_ids_of_originals = {}
    links = {**new_ids_of_originals, **new_ids}
    try:
        with cursor.copy(
            "copy ledger.transactions (id, transaction_key, kind, cause_type, cause_id, "
            "effective_at, content_hash, metadata, reverses_id) from stdin"
        ) as copy:
            for t in new:
                copy.write_row(
                    (
                        new_ids[t.key],
                        t.key,
                        t.kind,
                        t.cause_type,
                        t.cause_id,
                        t.effective_at,
                        t.content_hash(),
                        t.metadata_json(),
                        links[t.reverses] if t.reverses else None,
                    )
                )
    except psycopg.errors.UniqueViolation as error:
        if error.diag.constraint_name != "transactions_reversed_once":
            raise
        raise LedgerConflictError(
            "A transaction of this batch reverses one that was already reversed under another "
            f"key ({error.diag.message_detail}); an original is reversed at most once. "
            "Nothing of this batch was posted."
        ) from error
    return new_ids


def _insert_entries(
    cursor: psycopg.Cursor, batch: Sequence[Transaction], new_ids: dict[str, int]
) -> None:
    """Write the entries of the transactions just inserted: one COPY, checked per statement."""
    with cursor.copy(
        "copy ledger.entries (transaction_id, account, amount_minor, currency) from stdin"
    ) as copy:
        for transaction in batch:
            transaction_id = new_ids.get(transaction.key)
            if transaction_id is None:
                continue
            for entry in transaction.entries:
                copy.write_row((transaction_id, entry.account, entry.amount_minor, entry.currency))
