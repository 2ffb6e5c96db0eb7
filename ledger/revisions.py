"""The next revision of a cause: what the pipeline's postings have in common.

Usage accruals, fee lines and credit applications all bring the ledger to a target: the amount
a cause (a slot, an invoice line, a grant's application) should have moved from one account to
another. The next revision posts the target minus what the ledger already holds for the cause
and nothing when they are equal, under the key ``<kind>:<cause>:r<n>``, so re-runs post
nothing and a change posts only its difference, whatever the size (no rounding).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal

from ledger.model import EXACT, Entry, Transaction
from ledger.store import CauseTotal


def next_revision(
    *,
    kind: str,
    cause_type: str,
    cause_id: str,
    target_minor: Decimal,
    posted: CauseTotal | None,
    debited: str,
    credited: str,
    currency: str,
    effective_at: datetime,
    metadata: Mapping[str, str],
    target_label: str,
) -> Transaction | None:
    """The transaction that moves ``debited`` (up) and ``credited`` (down) to ``target_minor``
    for the cause, or None when the ledger already holds it. ``metadata`` gains the revision and
    the target under ``target_label``."""
    posted_minor = posted.amount_by_account.get(debited, Decimal(0)) if posted else Decimal(0)
    delta = EXACT.subtract(target_minor, posted_minor)
    if delta == 0:
        return None
    revision = (posted.revisions if posted else 0) + 1
    return Transaction(
        key=f"{kind}:{cause_id}:r{revision}",
        kind=kind,
        cause_type=cause_type,
        cause_id=cause_id,
        effective_at=effective_at,
        entries=(
            Entry(account=debited, amount_minor=delta, currency=currency),
            Entry(account=credited, amount_minor=delta.copy_negate(), currency=currency),
        ),
        metadata={**metadata, "revision": str(revision), target_label: str(target_minor)},
    )
