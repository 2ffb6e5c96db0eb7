"""Python refuses malformed records before they reach the database, and says what to do."""

from __future__ import annotations

import hashlib
import json
import pickle
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ledger import Account, Entry, LedgerValidationError, Transaction
from ledger.model import (
    MAX_DECIMAL_PLACES,
    _amount_text,
    decimal_places,
    normalised,
    simplest,
)
from tests.ledger.helpers import WHEN, transfer


def make(entries: tuple[Entry, ...], **changes: object) -> Transaction:
    fields: dict[str, object] = {
        "key": "x",
        "kind": "k",
        "cause_type": "c",
        "cause_id": "i",
        "effective_at": WHEN,
        "entries": entries,
    }
    fields.update(changes)
    return Transaction(**fields)  # type: ignore[arg-type]


BALANCED = (Entry("a", Decimal(1), "usd"), Entry("b", Decimal(-1), "usd"))


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: Entry("a", 1.5, "usd"), "must be a Decimal"),  # type: ignore[arg-type]
        (lambda: Entry("a", 2, "usd"), "must be a Decimal"),  # type: ignore[arg-type]
        (lambda: Entry("a", Decimal("NaN"), "usd"), "not finite"),
        (lambda: Entry("a", Decimal("Infinity"), "usd"), "not finite"),
        (lambda: Entry("a", Decimal("0.0000000000001"), "usd"), "more than 12 decimal places"),
        # 81 significant digits: an 80-digit context would have rounded the 1 away.
        (lambda: Entry("a", Decimal("1" * 26 + "." + "0" * 54 + "1"), "usd"), "decimal places"),
        (lambda: Entry("a", Decimal("1e26"), "usd"), "too large"),
        (lambda: Entry("a", Decimal(1), "USD"), "three lower-case letters"),
        (lambda: Entry("a", Decimal(1), "usdx"), "three lower-case letters"),
        (lambda: Entry("", Decimal(1), "usd"), "account"),
        (lambda: Entry("a" * 256, Decimal(1), "usd"), "at most 255"),
        (lambda: make((Entry("a", Decimal(1), "usd"), Entry("b", Decimal(-2), "usd"))), "balance"),
        (lambda: make((Entry("a", Decimal(0), "usd"),)), "at least two"),
        (lambda: make(()), "at least two"),
        (lambda: make(list(BALANCED)), "tuple of Entry"),
        (lambda: make((Entry("a", Decimal(1), "usd"), Entry("b", Decimal(-1), "eur"))), "eur"),
        (lambda: make(BALANCED, effective_at=datetime(2026, 1, 1)), "time zone"),
        (lambda: make(BALANCED, key=""), "key"),
        (lambda: make(BALANCED, kind=None), "kind"),
        (lambda: make(BALANCED, metadata={"n": 1}), "metadata"),
        (lambda: Account("a", "usd", normal_side="left"), "normal_side"),
        (lambda: Account("a", "us", normal_side="debit"), "currency"),
    ],
)
def test_malformed_records_are_refused_with_a_reason(build: object, message: str) -> None:
    with pytest.raises(LedgerValidationError, match=message):
        build()  # type: ignore[operator]


def test_accepted_edges() -> None:
    Entry("a", Decimal("99999999999999999999999999.999999999999"), "usd")  # 38 digits
    Entry("a", Decimal("1.500000000000000000000"), "usd")  # trailing zeros are not places
    Entry("a", Decimal("-0E-30"), "usd")
    make(
        (
            Entry("a", Decimal(1), "usd"),
            Entry("b", Decimal(-1), "usd"),
            Entry("c", Decimal(0), "usd"),
        )
    )
    two_currencies = (
        *BALANCED,
        Entry("c", Decimal("2.5"), "eur"),
        Entry("d", Decimal("-2.5"), "eur"),
    )
    make(two_currencies)
    # Sums are exact at full precision: in the default 28-digit context, big + 1e-12 rounds to
    # big, and these entries would look balanced.
    big = Decimal("12345678901234567890123456.123456789012")
    tiny = Decimal("1e-12")
    with pytest.raises(LedgerValidationError, match="does not balance"):
        make(
            (Entry("a", big, "usd"), Entry("b", tiny, "usd"), Entry("c", big.copy_negate(), "usd"))
        )


@pytest.mark.parametrize(
    ("amount", "places"),
    [("1", 0), ("1.50", 1), ("100", 0), ("1E+3", 0), ("0.000", 0), ("0.001", 3), ("-2.0100", 2)],
)
def test_decimal_places_are_counted_exactly(amount: str, places: int) -> None:
    assert decimal_places(Decimal(amount)) == places


@pytest.mark.parametrize(
    ("amount", "spelled"),
    [
        ("100", "100"),
        ("1.500", "1.5"),
        ("-0.000", "0"),
        ("1E+3", "1000"),
        ("0.000000000001", "1E-12"),
    ],
)
def test_simplest_drops_trailing_zeros_and_keeps_integers_plain(amount: str, spelled: str) -> None:
    assert str(simplest(Decimal(amount))) == spelled
    assert simplest(Decimal(amount)) == Decimal(amount)


def test_content_hash_ignores_spelling_entry_order_and_time_zone() -> None:
    base = transfer("t", "a", "b", "1.50")
    same = make(
        (Entry("b", Decimal("-1.5"), "usd"), Entry("a", Decimal("1.500"), "usd")),
        key="t",
        kind="test",
        cause_type="test",
        cause_id="t",
        effective_at=WHEN.astimezone(timezone(timedelta(hours=-5))),
    )
    assert base.content_hash() == same.content_hash()
    assert len(base.content_hash()) == 64


@pytest.mark.parametrize(
    "other",
    [
        transfer("t", "a", "b", "1.51"),
        transfer("u", "a", "b", "1.5"),
        transfer("t", "a", "c", "1.5"),
        transfer("t", "a", "b", "1.5", currency="eur"),
        make(BALANCED, key="t", kind="other", cause_type="test", cause_id="t"),
    ],
)
def test_content_hash_changes_with_content(other: Transaction) -> None:
    assert transfer("t", "a", "b", "1.5").content_hash() != other.content_hash()


def test_metadata_is_content_and_is_copied() -> None:
    metadata = {"revision": "1"}
    with_metadata = make(BALANCED, metadata=metadata)
    metadata["revision"] = "2"  # changing the caller's dict does not change the transaction
    assert with_metadata.metadata == {"revision": "1"}
    assert with_metadata.content_hash() != make(BALANCED).content_hash()


def test_records_are_frozen_hashable_and_picklable() -> None:
    transaction = transfer("t", "a", "b", "1")
    with pytest.raises(AttributeError):
        transaction.key = "u"  # type: ignore[misc]
    assert hash(transaction) == hash(transfer("t", "a", "b", "1"))
    assert pickle.loads(pickle.dumps(transaction)) == transaction


# Any text a key, name or metadata value may hold: quotes, backslashes, controls, non-ASCII.
names = st.text(min_size=1, max_size=20)
ledger_amounts = st.decimals(
    min_value=-(10**25), max_value=10**25, places=MAX_DECIMAL_PLACES, allow_nan=False
)


@given(
    key=names,
    kind=names,
    cause_id=names,
    account=names,
    amount=ledger_amounts,
    metadata=st.dictionaries(names, st.text(max_size=20), max_size=4),
    offset_minutes=st.integers(min_value=-14 * 60, max_value=14 * 60),
    reverses=st.none() | names,
)
def test_content_hash_is_sha256_of_sorted_compact_json(
    key: str,
    kind: str,
    cause_id: str,
    account: str,
    amount: Decimal,
    metadata: dict[str, str],
    offset_minutes: int,
    reverses: str | None,
) -> None:
    """The hand-written canonical text is exactly json.dumps(sort_keys, compact) of the content,
    and the stored metadata text is its metadata part."""
    if reverses == key:
        reverses = None
    effective_at = datetime(2026, 10, 1, 12, 30, 15, 250, tzinfo=UTC).astimezone(
        timezone(timedelta(minutes=offset_minutes))
    )
    transaction = make(
        (Entry(account, amount, "usd"), Entry("other", amount.copy_negate(), "usd")),
        key=key,
        kind=kind,
        cause_id=cause_id,
        effective_at=effective_at,
        metadata=metadata,
        reverses=reverses,
    )
    content: dict[str, object] = {
        "key": key,
        "kind": kind,
        "cause_type": "c",
        "cause_id": cause_id,
        "effective_at": effective_at.astimezone(UTC).isoformat(),
        "metadata": metadata,
        "entries": sorted(
            [
                [account, normalised(amount), "usd"],
                ["other", normalised(amount.copy_negate()), "usd"],
            ]
        ),
    }
    if reverses is not None:
        content["reverses"] = reverses
    text = json.dumps(content, sort_keys=True, separators=(",", ":"))
    assert transaction.content_hash() == hashlib.sha256(text.encode()).hexdigest()
    assert transaction.metadata_json() == json.dumps(
        metadata, sort_keys=True, separators=(",", ":")
    )
    assert json.loads(transaction.metadata_json()) == metadata


@pytest.mark.parametrize(
    "amount", ["0", "-0", "0.000", "-0E-12", "1E+3", "1.500", "-2.50", "1E-12", "120", "1E+25"]
)
def test_amounts_hash_as_their_normalised_text(amount: str) -> None:
    """The hashing path's shortcut spells every amount as normalised() does, exponents too."""
    assert _amount_text(Decimal(amount)) == normalised(Decimal(amount))
