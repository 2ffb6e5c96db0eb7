"""A reversal names its original, moves every amount back exactly, and happens at most once."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import psycopg
import pytest

from ledger import Entry, Ledger, LedgerConflictError, LedgerValidationError, Transaction
from tests.ledger.helpers import WHEN, transfer

LATER = WHEN + timedelta(days=3)


def test_a_reversal_moves_every_amount_back(book: Ledger) -> None:
    original = transfer("t1", "a", "b", "12.5")
    book.post_many([original])
    result = book.post_many([original.reversal("t1:reversal", LATER, reason="posted twice")])
    assert (result.created, result.existing) == (1, 0)
    assert book.balance("a", "usd") == 0
    assert book.balance("b", "usd") == 0
    report = book.verify(recompute_hashes=True)  # the stored hash covers what it reverses
    assert report.ok and report.transactions == 2


def test_replaying_a_reversal_is_a_no_op(book: Ledger) -> None:
    original = transfer("t1", "a", "b", "3")
    book.post_many([original])
    reversal = original.reversal("t1:reversal", LATER)
    book.post_many([reversal])
    assert book.post_many([reversal]).existing == 1
    assert book.verify().transactions == 2


def test_an_original_is_reversed_at_most_once(book: Ledger) -> None:
    original = transfer("t1", "a", "b", "3")
    book.post_many([original])
    book.post_many([original.reversal("first", LATER)])
    before = book.verify()
    with pytest.raises(LedgerConflictError, match="reversed at most once"):
        book.post_many([original.reversal("second", LATER), transfer("t2", "a", "c", "1")])
    assert book.verify() == before  # nothing of the batch was posted


def test_a_reversal_must_negate_its_original_exactly(book: Ledger) -> None:
    book.post_many([transfer("t1", "a", "b", "3")])
    partial = Transaction(
        key="partial",
        kind="reversal",
        cause_type="transaction",
        cause_id="t1",
        effective_at=LATER,
        entries=(Entry("a", Decimal("-2"), "usd"), Entry("b", Decimal("2"), "usd")),
        reverses="t1",
    )
    with pytest.raises(psycopg.errors.CheckViolation, match="not its exact negation"):
        book.post_many([partial])
    assert book.verify().transactions == 1


def test_a_reversal_cannot_itself_be_reversed(book: Ledger) -> None:
    original = transfer("t1", "a", "b", "3")
    book.post_many([original])
    reversal = original.reversal("t1:reversal", LATER)
    book.post_many([reversal])
    with pytest.raises(psycopg.errors.CheckViolation, match="reverses a reversal"):
        book.post_many([reversal.reversal("undo", LATER)])


def test_a_reversal_of_nothing_posted_is_refused(book: Ledger) -> None:
    with pytest.raises(LedgerValidationError, match="never posted"):
        book.post_many([transfer("t1", "a", "b", "3").reversal("r", LATER)])
    with pytest.raises(LedgerValidationError, match="cannot reverse itself"):
        Transaction(
            key="self",
            kind="k",
            cause_type="c",
            cause_id="i",
            effective_at=WHEN,
            entries=transfer("x", "a", "b", "1").entries,
            reverses="self",
        )


def test_the_reversal_link_is_content(book: Ledger) -> None:
    """The same key with or without ``reverses`` is different content: a conflict."""
    original = transfer("t1", "a", "b", "3")
    book.post_many([original, transfer("t2", "a", "b", "3")])
    reversal = original.reversal("r", LATER)
    book.post_many([reversal])
    twin = Transaction(
        key="r",
        kind=reversal.kind,
        cause_type=reversal.cause_type,
        cause_id=reversal.cause_id,
        effective_at=LATER,
        entries=reversal.entries,
        reverses="t2",
    )
    with pytest.raises(LedgerConflictError, match="different content"):
        book.post_many([twin])


def test_an_original_and_its_reversal_may_share_a_batch(book: Ledger) -> None:
    """Posted in either order within the batch, the original goes first."""
    original = transfer("t1", "a", "b", "4")
    result = book.post_many([original.reversal("a-reversal", LATER), original])
    assert (result.created, result.existing) == (2, 0)
    assert book.balance("a", "usd") == 0
    assert book.post_many([original, original.reversal("a-reversal", LATER)]).existing == 2
    assert book.verify(recompute_hashes=True).ok
