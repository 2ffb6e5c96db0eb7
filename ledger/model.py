"""Ledger records as immutable values, validated before they reach the database.

Amounts are exact ``Decimal`` in minor units (cents), signed: positive debits, negative credits.
The scale is fixed up front at 12 decimal places (``NUMERIC(38, 12)``) because records are
immutable: a value the column would round is refused here, never rounded silently.
"""

from __future__ import annotations

import hashlib
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Context, Decimal, localcontext
from json.encoder import encode_basestring_ascii  # type: ignore[attr-defined]
from typing import Literal

from ledger.errors import LedgerValidationError

MAX_DECIMAL_PLACES = 12
MAX_INTEGER_DIGITS = 38 - MAX_DECIMAL_PLACES
MAX_NAME_CHARS = 255  # keys, kinds, causes and account names; the database checks it too
MAX_ENTRIES_PER_TRANSACTION = 1000
CURRENCY_PATTERN = re.compile(r"^[a-z]{3}$")
NORMAL_SIDES = ("debit", "credit")
# Exact arithmetic for NUMERIC(38, 12): the default context (28 digits) would round sums and
# normalisation of large amounts. Sums of up to 10**40 such amounts still fit in 80 digits.
EXACT = Context(prec=80)

NormalSide = Literal["debit", "credit"]

__all__ = [
    "EXACT",
    "Account",
    "Entry",
    "LedgerValidationError",
    "Transaction",
    "content_hash_of",
    "decimal_places",
    "normalised",
    "simplest",
]


def decimal_places(amount: Decimal) -> int:
    """Significant decimal places, counted exactly (no context, so no rounding): 1.50 has 1."""
    _, digits, exponent = amount.as_tuple()
    if not isinstance(exponent, int) or exponent >= 0 or not any(digits):
        return 0
    places = -exponent
    index = len(digits) - 1
    while places > 0 and digits[index] == 0:
        places -= 1
        index -= 1
    return places


def simplest(amount: Decimal) -> Decimal:
    """The same value without trailing zeros, never in exponent form: 1.500 -> 1.5, 100 -> 100."""
    if amount.is_zero():
        return Decimal(0)  # also for -0 and 0E-12
    reduced = amount.normalize(EXACT)
    if reduced.as_tuple().exponent > 0:  # type: ignore[operator]  # finite: an int
        return reduced.quantize(Decimal(1), context=EXACT)
    return reduced


def normalised(amount: Decimal) -> str:
    """One text per value: 1.50 and 1.5 are the same amount, and hash the same."""
    text = format(amount.normalize(EXACT), "f")
    return "0" if text in ("-0", "0") else text


def _check_name(what: str, value: object) -> None:
    if not isinstance(value, str) or not value or len(value) > MAX_NAME_CHARS:
        raise LedgerValidationError(
            f"{what} must be a non-empty string of at most {MAX_NAME_CHARS} characters, "
            f"not {value!r}."
        )


def _check_currency(what: str, currency: object) -> None:
    if not isinstance(currency, str) or not CURRENCY_PATTERN.match(currency):
        raise LedgerValidationError(
            f"{what}: currency {currency!r} must be three lower-case letters, as Stripe writes "
            "it (e.g. 'usd')."
        )


@dataclass(frozen=True)
class Account:
    """An account declared before use; it holds one currency and never changes once opened.

    ``must_not_go_negative`` keeps the balance on the ``normal_side`` at or above zero (a debit
    account may not be net credited, a credit account may not be net debited), checked at commit.
    """

    name: str
    currency: str
    normal_side: NormalSide = field(kw_only=True)
    must_not_go_negative: bool = field(default=False, kw_only=True)

    def __post_init__(self) -> None:
        _check_name("An account name", self.name)
        _check_currency(f"Account {self.name}", self.currency)
        if self.normal_side not in NORMAL_SIDES:
            raise LedgerValidationError(
                f"Account {self.name}: normal_side must be 'debit' or 'credit', "
                f"not {self.normal_side!r}."
            )
        if not isinstance(self.must_not_go_negative, bool):
            raise LedgerValidationError(
                f"Account {self.name}: must_not_go_negative must be True or False."
            )


@dataclass(frozen=True)
class Entry:
    account: str
    amount_minor: Decimal
    currency: str

    def __post_init__(self) -> None:
        _check_name("An entry's account", self.account)
        amount = self.amount_minor
        if not isinstance(amount, Decimal):
            raise LedgerValidationError(
                f"Entry on {self.account}: amount_minor must be a Decimal, not "
                f"{type(amount).__name__} ({amount!r}); floats lose cents. Build it from a "
                "string: Decimal('1.25')."
            )
        if not amount.is_finite():
            raise LedgerValidationError(f"Entry on {self.account}: amount {amount} is not finite.")
        if decimal_places(amount) > MAX_DECIMAL_PLACES:
            raise LedgerValidationError(
                f"Entry on {self.account}: {amount} has more than {MAX_DECIMAL_PLACES} decimal "
                "places; round it where the rounding rule says, before posting."
            )
        if amount and amount.adjusted() >= MAX_INTEGER_DIGITS:
            raise LedgerValidationError(
                f"Entry on {self.account}: {amount} is too large; amounts have at most "
                f"{MAX_INTEGER_DIGITS} integer digits (NUMERIC(38, 12))."
            )
        _check_currency(f"Entry on {self.account}", self.currency)


@dataclass(frozen=True, slots=True)
class Transaction:
    key: str
    kind: str
    cause_type: str
    cause_id: str
    effective_at: datetime
    entries: tuple[Entry, ...]
    # Not part of __hash__ (a dict is unhashable); part of equality and the content hash.
    metadata: Mapping[str, str] = field(default_factory=dict, hash=False)
    # The key of the transaction this one reverses: it must negate it exactly, and an original
    # is reversed at most once (both checked by the database).
    reverses: str | None = field(default=None, kw_only=True)
    # Computed once, on first use (content_hash). Declared, so every value has the attributes
    # from the start: set later, each value would get a dict object of its own for them (50,000
    # in a large batch, which the cycle collector then scans again and again).
    _content_hash: str | None = field(default=None, init=False, repr=False, compare=False)
    _metadata_json: str | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        _check_name("A transaction key (its idempotency key)", self.key)
        for name in ("kind", "cause_type", "cause_id"):
            _check_name(f"Transaction {self.key}: {name}", getattr(self, name))
        if self.reverses is not None:
            _check_name(f"Transaction {self.key}: reverses", self.reverses)
            if self.reverses == self.key:
                raise LedgerValidationError(f"Transaction {self.key} cannot reverse itself.")
        if not isinstance(self.effective_at, datetime) or self.effective_at.utcoffset() is None:
            raise LedgerValidationError(
                f"Transaction {self.key}: effective_at must be a datetime with a time zone "
                f"(e.g. tzinfo=UTC), not {self.effective_at!r}."
            )
        self._check_metadata()
        self._check_entries()

    def _check_metadata(self) -> None:
        if not isinstance(self.metadata, Mapping):
            raise LedgerValidationError(f"Transaction {self.key}: metadata must be a mapping.")
        bad = [(k, v) for k, v in self.metadata.items() if not (_is_str(k) and _is_str(v))]
        if bad:
            raise LedgerValidationError(
                f"Transaction {self.key}: metadata keys and values must be strings: {bad}."
            )
        # A private copy: a caller changing its dict later cannot change posted content.
        object.__setattr__(self, "metadata", dict(self.metadata))

    def _check_entries(self) -> None:
        if not isinstance(self.entries, tuple) or not all(
            isinstance(entry, Entry) for entry in self.entries
        ):
            raise LedgerValidationError(
                f"Transaction {self.key}: entries must be a tuple of Entry values."
            )
        if not 2 <= len(self.entries) <= MAX_ENTRIES_PER_TRANSACTION:
            raise LedgerValidationError(
                f"Transaction {self.key} has {len(self.entries)} entries; double entry needs "
                f"at least two (and at most {MAX_ENTRIES_PER_TRANSACTION})."
            )
        sums: dict[str, Decimal] = defaultdict(Decimal)
        with localcontext(EXACT):
            for entry in self.entries:
                sums[entry.currency] += entry.amount_minor
        unbalanced = {currency: str(total) for currency, total in sums.items() if total != 0}
        if unbalanced:
            raise LedgerValidationError(
                f"Transaction {self.key} does not balance: its entries sum to {unbalanced} "
                "instead of zero per currency; add the missing debit or credit."
            )

    def content_hash(self) -> str:
        """What makes two postings of one key the same: everything but ids and posting time.

        Computed once per value: the value is immutable, so a retried batch does not pay again.
        """
        cached = self._content_hash
        if cached is None:
            cached, metadata_json = self._compute_content_hash()
            object.__setattr__(self, "_content_hash", cached)
            object.__setattr__(self, "_metadata_json", metadata_json)
        return cached

    def metadata_json(self) -> str:
        """The metadata as the JSON text the content hash covers (sorted keys, ASCII): what the
        ledger stores, rendered once with the hash."""
        self.content_hash()
        assert self._metadata_json is not None
        return self._metadata_json

    def _compute_content_hash(self) -> tuple[str, str]:
        return _content_hash_and_metadata_json(
            key=self.key,
            kind=self.kind,
            cause_type=self.cause_type,
            cause_id=self.cause_id,
            effective_at=self.effective_at,
            metadata=self.metadata,
            entries=((e.account, e.amount_minor, e.currency) for e in self.entries),
            reverses=self.reverses,
        )

    def reversal(self, key: str, effective_at: datetime, **metadata: str) -> Transaction:
        """The transaction that moves every amount of this one back, under ``key``."""
        return Transaction(
            key=key,
            kind="reversal",
            cause_type="transaction",
            cause_id=self.key,
            effective_at=effective_at,
            entries=tuple(
                Entry(e.account, e.amount_minor.copy_negate(), e.currency) for e in self.entries
            ),
            metadata=metadata,
            reverses=self.key,
        )


def _is_str(value: object) -> bool:
    return isinstance(value, str)


def content_hash_of(
    *,
    key: str,
    kind: str,
    cause_type: str,
    cause_id: str,
    effective_at: datetime,
    metadata: Mapping[str, str],
    entries: Iterable[tuple[str, Decimal, str]],
    reverses: str | None = None,
) -> str:
    """sha256 of a canonical JSON text; ``verify`` recomputes it from stored rows.

    Entries are sorted and amounts normalised, so neither entry order nor the spelling of an
    amount (1.50 vs 1.5) nor the time zone of ``effective_at`` changes the hash. ``reverses``
    is hashed only when set, so hashes of transactions posted before reversals existed stay.
    """
    content_hash, _ = _content_hash_and_metadata_json(
        key=key,
        kind=kind,
        cause_type=cause_type,
        cause_id=cause_id,
        effective_at=effective_at,
        metadata=metadata,
        entries=entries,
        reverses=reverses,
    )
    return content_hash


def _content_hash_and_metadata_json(
    *,
    key: str,
    kind: str,
    cause_type: str,
    cause_id: str,
    effective_at: datetime,
    metadata: Mapping[str, str],
    entries: Iterable[tuple[str, Decimal, str]],
    reverses: str | None,
) -> tuple[str, str]:
    """The content hash, and the metadata's part of the hashed text (valid JSON on its own).

    The text is json.dumps(content, sort_keys=True, separators=(",", ":")) of the dict
    {key, kind, cause_type, cause_id, effective_at, metadata, entries[, reverses]}, written out
    by hand because it is on the posting path (a test pins the two spellings to each other).
    """
    quote = encode_basestring_ascii
    rendered_entries = ",".join(
        [
            f"[{quote(account)},{quote(amount)},{quote(currency)}]"
            for account, amount, currency in sorted(
                [(account, _amount_text(amount), currency) for account, amount, currency in entries]
            )
        ]
    )
    metadata_json = (
        "{"
        + ",".join([f"{quote(name)}:{quote(metadata[name])}" for name in sorted(metadata)])
        + "}"
    )
    text = (
        f'{{"cause_id":{quote(cause_id)},"cause_type":{quote(cause_type)},'
        f'"effective_at":{_instant_text(effective_at)},'
        f'"entries":[{rendered_entries}],"key":{quote(key)},"kind":{quote(kind)},'
        f'"metadata":{metadata_json}'
        + (f',"reverses":{quote(reverses)}}}' if reverses is not None else "}")
    )
    return hashlib.sha256(text.encode()).hexdigest(), metadata_json


def _amount_text(amount: Decimal) -> str:
    """``normalised(amount)``, without its arithmetic for amounts Decimal already writes
    without an exponent (nearly all): trailing zeros of the fraction dropped, no minus zero."""
    text = str(amount)
    if "E" in text:
        return normalised(amount)
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text == "-0" else text


# Batches share a few instants (one per usage date): render each once.
MAX_INSTANTS_CACHED = 4096
_instant_texts: dict[datetime, str] = {}


def _instant_text(instant: datetime) -> str:
    """The instant in UTC, ISO 8601, as a JSON string."""
    text = _instant_texts.get(instant)
    if text is None:
        text = encode_basestring_ascii(instant.astimezone(UTC).isoformat())
        if len(_instant_texts) >= MAX_INSTANTS_CACHED:
            _instant_texts.clear()
        _instant_texts[instant] = text
    return text
