"""Ledger test fixtures: a fresh database per test on the session's PostgreSQL server.

The server itself is the session fixture ``postgres_url`` of ``tests/conftest.py``
(``embedded_ledger_url(Path(tempfile.mkdtemp(prefix="mbpg")))``): one server for the whole test
session, shared with the pipeline tests rather than a second one for the ledger.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator

import psycopg
import pytest

from ledger import Ledger


@pytest.fixture
def new_database(postgres_url: str) -> Iterator[Callable[[], str]]:
    """Create empty databases on demand; each is dropped when the test ends."""
    names: list[str] = []

    def create() -> str:
        name = f"ledger_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            conn.execute(f'create database "{name}"')
        names.append(name)
        return postgres_url.replace("/postgres?", f"/{name}?", 1)

    yield create
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        for name in names:
            conn.execute(f'drop database if exists "{name}" with (force)')


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
