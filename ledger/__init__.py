"""The double-entry ledger: append-only, balanced, idempotent. Pure Python over PostgreSQL."""

from ledger.embedded import embedded_ledger_url
from ledger.errors import (
    LedgerBalanceError,
    LedgerConflictError,
    LedgerError,
    LedgerValidationError,
)
from ledger.migrations import migrate
from ledger.model import Account, Entry, Transaction
from ledger.store import CauseTotal, DunningEvent, Ledger, PostResult, VerifyReport

__all__ = [
    "Account",
    "CauseTotal",
    "DunningEvent",
    "Entry",
    "Ledger",
    "LedgerBalanceError",
    "LedgerConflictError",
    "LedgerError",
    "LedgerValidationError",
    "PostResult",
    "Transaction",
    "VerifyReport",
    "embedded_ledger_url",
    "migrate",
]
