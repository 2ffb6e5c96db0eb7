"""Ledger test fixtures: a fresh database per test on the session's PostgreSQL server.

The server itself is the session fixture ``postgres_url`` of ``tests/conftest.py``
(``embedded_ledger_url(Path(tempfile.mkdtemp(prefix="mbpg")))``): one server for the whole test
session, shared with the pipeline tests rather than a second one for the ledger.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import psycopg
import pytest

from ledger import Ledger


@pytest.fixture
def ledger_url(new_database: Callable[[], str]) -> str:
    """One fresh, empty database for this test (not migrated yet)."""
    return new_database()


@pytest.fixture
def book(ledger_url: str) -> Iterator[Ledger]:
    """A migrated, empty ledger."""
    with Ledger.connect(ledger_url) as ledger:
        yield ledger


@pytest.fixture
def raw(book: Ledger, ledger_url: str) -> Iterator[psycopg.Connection]:
    """A plain connection to the ledger's database, to prove what the database itself refuses."""
    with psycopg.connect(ledger_url, autocommit=True) as conn:
        yield conn
