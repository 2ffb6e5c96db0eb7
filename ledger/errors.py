"""The ledger's errors: one base class, so callers can catch every ledger refusal at once."""

from __future__ import annotations


class LedgerError(Exception):
    """The ledger refused a request; nothing of it was written."""


class LedgerValidationError(LedgerError, ValueError):
    """A transaction, entry or account is malformed; nothing was written."""


class LedgerConflictError(LedgerError, RuntimeError):
    """A key was posted before with other content (like TigerBeetle's exists_with_different_*)."""


class LedgerBalanceError(LedgerError):
    """A posting would take an account guarded by ``must_not_go_negative`` below zero."""
