"""Properties over random batches: balances are sums of entries, every currency sums to zero,
replays post nothing, the content hash ignores order, and the database agrees with Python on
what balances."""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Callable
from decimal import Decimal, localcontext

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ledger import Entry, Ledger, LedgerValidationError, Transaction
from ledger.model import EXACT
from tests.ledger.helpers import WHEN, insert_raw_transaction

CURRENCIES = ("usd", "eur", "jpy")
ACCOUNT_NAMES = ("customer:a", "customer:b", "platform:revenue", "platform:cash")
# Up to 3 legs of up to 10**24 plus their balancing leg stay within NUMERIC(38, 12).
amounts = st.one_of(
    st.decimals(min_value=-1_000_000, max_value=1_000_000, places=12),
    st.decimals(min_value=-(10**24), max_value=10**24, places=12),
    st.decimals(min_value=-1000, max_value=1000, places=2),
)
legs = st.lists(st.tuples(st.sampled_from(ACCOUNT_NAMES), amounts), min_size=1, max_size=3)
# Per transaction: one or two currencies, each with its legs (balanced by one more entry).
transaction_shapes = st.dictionaries(st.sampled_from(CURRENCIES), legs, min_size=1, max_size=2)
examples = itertools.count()
PROPERTY_SETTINGS = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


def exact_sum(values: list[Decimal]) -> Decimal:
    with localcontext(EXACT):
        return sum(values, Decimal(0))


def account(prefix: str, name: str, currency: str) -> str:
    """Unique per example (the database is shared by examples) and per currency."""
    return f"{prefix}:{name}:{currency}"


def build(prefix: str, number: int, shape: dict[str, list[tuple[str, Decimal]]]) -> Transaction:
    entries = []
    for currency, currency_legs in sorted(shape.items()):
        for name, amount in currency_legs:
            entries.append(Entry(account(prefix, name, currency), amount, currency))
        balancing = exact_sum([amount for _, amount in currency_legs]).copy_negate()
        entries.append(Entry(account(prefix, "platform:suspense", currency), balancing, currency))
    key = f"{prefix}:t{number}"
    return Transaction(key, "test", "test", key, WHEN, tuple(entries))


@pytest.fixture
def two_ledgers(new_database: Callable[[], str]) -> tuple[str, str]:
    """Two databases shared by all examples of a test; examples use their own keys and accounts."""
    return new_database(), new_database()


@PROPERTY_SETTINGS
@given(
    shapes=st.lists(transaction_shapes, min_size=1, max_size=12),
    order=st.randoms(use_true_random=False),
    replay_first=st.booleans(),
    replay_second=st.booleans(),
)
def test_balances_are_sums_of_entries_and_the_hash_ignores_order(
    two_ledgers: tuple[str, str],
    shapes: list[dict[str, list[tuple[str, Decimal]]]],
    order: object,
    replay_first: bool,
    replay_second: bool,
) -> None:
    prefix = f"e{next(examples)}"
    batch = [build(prefix, number, shape) for number, shape in enumerate(shapes)]
    shuffled = list(batch)
    order.shuffle(shuffled)  # type: ignore[attr-defined]
    half = len(shuffled) // 2
    arrangements = {
        two_ledgers[0]: [batch] + ([batch] if replay_first else []),
        two_ledgers[1]: [shuffled[half:], shuffled[:half]] + ([shuffled] if replay_second else []),
    }
    expected: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
    for transaction in batch:
        for entry in transaction.entries:
            key = (entry.account, entry.currency)
            expected[key] = exact_sum([expected[key], entry.amount_minor])
    reports = []
    for url, parts in arrangements.items():
        with Ledger.connect(url) as book:
            results = [book.post_many(part) for part in parts]
            assert sum(result.created for result in results) == len(batch)
            assert sum(r.created + r.existing for r in results) == sum(map(len, parts))
            for (name, currency), total in expected.items():
                assert book.balance(name, currency) == total
            reports.append(book.verify(recompute_hashes=True))
        with psycopg.connect(url) as conn:
            totals = conn.execute(
                "select currency, sum(amount_minor) from ledger.entries group by currency"
            ).fetchall()
        assert all(total == 0 for _, total in totals), totals
    assert all(report.ok for report in reports)
    assert reports[0].content_hash == reports[1].content_hash
    assert reports[0].transactions == reports[1].transactions


raw_entries = st.lists(
    st.tuples(st.sampled_from(ACCOUNT_NAMES), amounts, st.sampled_from(CURRENCIES[:2])),
    max_size=4,
)


@pytest.fixture
def one_ledger(new_database: Callable[[], str]) -> str:
    url = new_database()
    Ledger.connect(url).close()
    return url


@PROPERTY_SETTINGS
@given(entries=raw_entries, balance_it=st.booleans())
def test_the_database_and_python_agree_on_what_balances(
    one_ledger: str, entries: list[tuple[str, Decimal, str]], balance_it: bool
) -> None:
    """Random entries, often unbalanced: Python refuses them exactly when the database does."""
    prefix = f"r{next(examples)}"
    rows = [
        (account(prefix, name, currency), amount, currency) for name, amount, currency in entries
    ]
    if balance_it and rows:
        _, amount, currency = rows[0]
        rows.append(
            (account(prefix, "platform:suspense", currency), amount.copy_negate(), currency)
        )
    try:
        Transaction(prefix, "k", "c", "i", WHEN, tuple(Entry(*row) for row in rows))
        python_accepts = True
    except LedgerValidationError:
        python_accepts = False
    with psycopg.connect(one_ledger, autocommit=True) as conn:
        try:
            with conn.transaction():
                transaction_id = insert_raw_transaction(conn, prefix)
                for name, amount, currency in rows:
                    conn.execute(
                        "insert into ledger.accounts (name, currency) values (%s, %s) "
                        "on conflict do nothing",
                        [name, currency],
                    )
                    conn.execute(
                        "insert into ledger.entries (transaction_id, account, amount_minor, "
                        "currency) values (%s, %s, %s, %s)",
                        [transaction_id, name, amount, currency],
                    )
            database_accepts = True
        except psycopg.errors.CheckViolation:
            database_accepts = False
    assert python_accepts == database_accepts
