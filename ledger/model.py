"""Ledger records as immutable values, validated before they reach the database.

Amounts are exact ``Decimal`` in minor units (cents), signed: positive debits, negative credits.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Context, Decimal, localcontext

MAX_DECIMAL_PLACES = 12
MAX_INTEGER_DIGITS = 38 - MAX_DECIMAL_PLACES
CURRENCY_PATTERN = re.compile(r"^[a-z]{3}$")
# Exact arithmetic for NUMERIC(38, 12): the default context (28 digits) would round sums and
# normalisation of large amounts. Batch sums of many such amounts still fit in 80 digits.
EXACT = Context(prec=80)


class LedgerValidationError(ValueError):
    """A transaction or entry is malformed; nothing was written."""


def normalised(amount: Decimal) -> str:
    """One text per value: 1.50 and 1.5 are the same amount, and hash the same."""
    text = format(amount.normalize(EXACT), "f")
    return "0" if text in ("-0", "0") else text


@dataclass(frozen=True)
class Entry:
    account: str
    amount_minor: Decimal
    currency: str

    def __post_init__(self) -> None:
        if not isinstance(self.amount_minor, Decimal):
            raise LedgerValidationError(
                f"Entry on {self.account}: amount_minor must be a Decimal, not "
                f"{type(self.amount_minor).__name__} ({self.amount_minor!r}); floats lose cents."
            )
        if not self.amount_minor.is_finite():
            raise LedgerValidationError(f"Entry on {self.account}: amount is not finite.")
        exponent = self.amount_minor.normalize(EXACT).as_tuple().exponent
        if isinstance(exponent, int) and -exponent > MAX_DECIMAL_PLACES:
            raise LedgerValidationError(
                f"Entry on {self.account}: {self.amount_minor} has more than "
                f"{MAX_DECIMAL_PLACES} decimal places; round it where the rounding rule says."
            )
        if abs(self.amount_minor) >= Decimal(10) ** MAX_INTEGER_DIGITS:
            raise LedgerValidationError(f"Entry on {self.account}: amount too large.")
        if not CURRENCY_PATTERN.match(self.currency):
            raise LedgerValidationError(
                f"Entry on {self.account}: currency {self.currency!r} must be three lower-case "
                "letters, as Stripe writes it (e.g. 'usd')."
            )
        if not isinstance(self.account, str) or not self.account:
            raise LedgerValidationError("An entry needs an account name.")


@dataclass(frozen=True)
class Transaction:
    key: str
    kind: str
    cause_type: str
    cause_id: str
    effective_at: datetime
    entries: tuple[Entry, ...]
    metadata: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.key, str) or not self.key:
            raise LedgerValidationError("A transaction needs a key (its idempotency key).")
        for name in ("kind", "cause_type", "cause_id"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value:
                raise LedgerValidationError(
                    f"Transaction {self.key}: {name} must be a non-empty string, not {value!r}."
                )
        if not isinstance(self.effective_at, datetime) or self.effective_at.utcoffset() is None:
            raise LedgerValidationError(
                f"Transaction {self.key}: effective_at must carry a time zone."
            )
        if not isinstance(self.entries, tuple) or not all(
            isinstance(entry, Entry) for entry in self.entries
        ):
            raise LedgerValidationError(
                f"Transaction {self.key}: entries must be a tuple of Entry values."
            )
        if not isinstance(self.metadata, Mapping):
            raise LedgerValidationError(f"Transaction {self.key}: metadata must be a mapping.")
        bad_metadata = [
            (k, v)
            for k, v in self.metadata.items()
            if not isinstance(k, str) or not isinstance(v, str)
        ]
        if bad_metadata:
            raise LedgerValidationError(
                f"Transaction {self.key}: metadata keys and values must be strings: {bad_metadata}."
            )
        if len(self.entries) < 2:
            raise LedgerValidationError(
                f"Transaction {self.key} has {len(self.entries)} entries; double entry needs two."
            )
        sums: dict[str, Decimal] = defaultdict(Decimal)
        with localcontext(EXACT):
            for entry in self.entries:
                sums[entry.currency] += entry.amount_minor
        unbalanced = {c: s for c, s in sums.items() if s != 0}
        if unbalanced:
            raise LedgerValidationError(
                f"Transaction {self.key} does not balance: entries sum to {unbalanced}."
            )

    def content_hash(self) -> str:
        content = {
            "key": self.key,
            "kind": self.kind,
            "cause_type": self.cause_type,
            "cause_id": self.cause_id,
            "effective_at": self.effective_at.astimezone(UTC).isoformat(),
            "metadata": dict(sorted(self.metadata.items())),
            "entries": sorted(
                [e.account, normalised(e.amount_minor), e.currency] for e in self.entries
            ),
        }
        encoded = json.dumps(content, sort_keys=True, separators=(",", ":")).encode()
        return hashlib.sha256(encoded).hexdigest()
