"""What Stripe's invoice events mean for the ledger and for dunning, whatever their order.

Stripe delivers webhooks at least once and in no particular order. So nothing here applies an
event to a current state: an invoice's state is recomputed from *all* of its stored events each
time one arrives, and every effect has a key derived from the invoice or the event. Delivering
the same events in any order, any number of times, ends in the same ledger and dunning state.

Effects of an invoice's events:

- finalised (``invoice.finalized``, or any later state): the invoiced whole cents move from the
  customer's unbilled receivable to their receivable (``invoice_finalised:<invoice>``). What is
  left unbilled for the period afterwards is the rounding residue, or a real discrepancy that
  reconciliation shows.
- ``invoice.payment_failed``: a dunning step ``payment_failed`` (attempt, next retry); no money.
- ``invoice.payment_action_required``: a dunning step ``payment_failed`` waiting for the customer.
- ``invoice.paid``: the payment clears the receivable to Stripe's balance (``payment:<invoice>``);
  after failed attempts, also a dunning step ``recovered``.
- ``invoice.marked_uncollectible``: the open amount is written off to bad debt
  (``write_off:<invoice>``) and the dunning state is ``uncollectible``; paid after all, the
  write-off is reversed (``write_off_recovered:<invoice>``).
- ``invoice.voided``: the invoice no longer claims anything, but the usage it billed was still
  delivered. Its finalisation is reversed (``invoice_voided:<invoice>``), so the amount returns to
  the customer's unbilled receivable, where reconciliation shows it until it is invoiced again or
  adjusted; a write-off of the voided invoice is reversed first (``write_off_voided:<invoice>``).
  Nothing is silently lost and nothing stays claimed twice.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from ledger import DunningEvent, Transaction
from ledger.postings import invoice_finalisation, payment_received, write_off

INVOICE_EVENT_TYPES = (
    "invoice.created",
    "invoice.finalized",
    "invoice.payment_failed",
    "invoice.payment_action_required",
    "invoice.paid",
    "invoice.marked_uncollectible",
    "invoice.voided",
)
# Where an event type stands in an invoice's life, to order events with the same `created`.
LIFE_ORDER = {name: rank for rank, name in enumerate(INVOICE_EVENT_TYPES)}


@dataclass(frozen=True)
class InvoiceEvent:
    """A stored webhook event about one invoice: its id, type, time and the invoice as sent."""

    event_id: str
    event_type: str
    created: int
    invoice: Mapping[str, Any]

    @property
    def order(self) -> tuple[int, int, str]:
        return (self.created, LIFE_ORDER.get(self.event_type, -1), self.event_id)


@dataclass(frozen=True)
class InvoiceEffects:
    invoice_id: str
    status: str
    transactions: list[Transaction]
    dunning_events: list[DunningEvent]


def _at(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def _transition(event: InvoiceEvent, name: str) -> int:
    """A time from the invoice's ``status_transitions`` (0 when not reached)."""
    return int((event.invoice.get("status_transitions") or {}).get(name) or 0)


def _voided_at(event: InvoiceEvent) -> datetime:
    return _at(_transition(event, "voided_at") or event.created)


def invoice_effects(events: Iterable[InvoiceEvent]) -> InvoiceEffects:
    """The ledger transactions and dunning steps all of one invoice's events call for."""
    ordered = sorted(events, key=lambda e: e.order)
    if not ordered:
        raise ValueError("invoice_effects needs at least one event")
    latest = ordered[-1].invoice
    invoice_id = str(latest["id"])
    customer = str(latest["metadata"].get("meterbook_customer_id") or latest["customer"])
    currency = str(latest["currency"])
    transactions: list[Transaction] = []
    dunning: list[DunningEvent] = []

    # Each effect's content comes from the invoice's own fields (totals, status_transitions),
    # never from which of its events happen to have arrived, so a key never changes content.
    finalised = next((e for e in ordered if _transition(e, "finalized_at")), None)
    if finalised is not None and int(finalised.invoice["total"]) > 0:
        total = Decimal(int(finalised.invoice["total"]))
        transactions.append(
            invoice_finalisation(
                invoice_id=invoice_id,
                customer_id=customer,
                unbilled_minor=total,
                invoiced_minor=total,
                currency=currency,
                effective_at=_at(_transition(finalised, "finalized_at")),
            )
        )

    voided = next((e for e in ordered if e.event_type == "invoice.voided"), None)
    failures = 0
    for event in ordered:
        attempt = int(event.invoice.get("attempt_count") or 0)
        if event.event_type in ("invoice.payment_failed", "invoice.payment_action_required"):
            failures += 1
            next_attempt = event.invoice.get("next_payment_attempt")
            dunning.append(
                DunningEvent(
                    event_key=event.event_id,
                    invoice_id=invoice_id,
                    customer_id=customer,
                    state="retry_scheduled" if next_attempt else "payment_failed",
                    attempt=attempt,
                    occurred_at=_at(event.created),
                    detail={
                        "stripe_event_type": event.event_type,
                        "next_payment_attempt": next_attempt,
                    },
                )
            )
        elif event.event_type == "invoice.paid":
            amount_paid = int(event.invoice.get("amount_paid") or 0)
            if amount_paid > 0:
                transactions.append(
                    payment_received(
                        payment_id=invoice_id,
                        invoice_id=invoice_id,
                        customer_id=customer,
                        amount_minor=Decimal(amount_paid),
                        currency=currency,
                        effective_at=_at(_transition(event, "paid_at") or event.created),
                    )
                )
            if failures:
                dunning.append(
                    DunningEvent(
                        event_key=event.event_id,
                        invoice_id=invoice_id,
                        customer_id=customer,
                        state="recovered",
                        attempt=attempt,
                        occurred_at=_at(event.created),
                    )
                )
        elif event.event_type == "invoice.marked_uncollectible":
            remaining = int(event.invoice.get("amount_remaining") or 0)
            if remaining > 0:
                written_off = write_off(
                    invoice_id=invoice_id,
                    customer_id=customer,
                    amount_minor=Decimal(remaining),
                    currency=currency,
                    effective_at=_at(
                        _transition(event, "marked_uncollectible_at") or event.created
                    ),
                )
                transactions.append(written_off)
                paid_later = next((e for e in ordered if e.event_type == "invoice.paid"), None)
                if paid_later is not None:  # collected after all: the write-off is undone
                    transactions.append(
                        written_off.reversal(
                            f"write_off_recovered:{invoice_id}",
                            _at(_transition(paid_later, "paid_at") or paid_later.created),
                        )
                    )
                elif voided is not None:  # Stripe voids uncollectible invoices too
                    transactions.append(
                        written_off.reversal(f"write_off_voided:{invoice_id}", _voided_at(voided))
                    )
            dunning.append(
                DunningEvent(
                    event_key=event.event_id,
                    invoice_id=invoice_id,
                    customer_id=customer,
                    state="uncollectible",
                    attempt=attempt,
                    occurred_at=_at(event.created),
                )
            )
    if voided is not None and transactions and transactions[0].kind == "invoice_finalised":
        transactions.append(
            transactions[0].reversal(f"invoice_voided:{invoice_id}", _voided_at(voided))
        )
    return InvoiceEffects(
        invoice_id=invoice_id,
        status=str(latest.get("status")),
        transactions=transactions,
        dunning_events=dunning,
    )
