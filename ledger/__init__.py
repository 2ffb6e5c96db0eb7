"""The double-entry ledger: append-only, balanced, idempotent. Pure Python over PostgreSQL."""

from ledger.model import Entry, LedgerValidationError, Transaction
from ledger.store import (
    CauseTotal,
    Ledger,
    LedgerConflictError,
    PostResult,
    VerifyReport,
)

__all__ = [
    "CauseTotal",
    "Entry",
    "Ledger",
    "LedgerConflictError",
    "LedgerValidationError",
    "PostResult",
    "Transaction",
    "VerifyReport",
]
