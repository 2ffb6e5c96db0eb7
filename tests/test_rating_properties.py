"""Invariants of posting and sending differences, whatever the sequence of re-ratings."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.store import CauseTotal
from ledger.usage_accruals import RatedSlot, plan_usage_accruals, unbilled_receivable_account
from stripe_sync.meter_events import MeterSlot, plan_meter_events
from stripe_sync.outbox import SlotTotal

DAYS = [date(2026, 10, 1), date(2026, 10, 2)]
SLOTS = [("cus_a", "m1"), ("cus_a", "m2"), ("cus_b", "m1")]

money = st.decimals(
    min_value=Decimal(0),
    max_value=Decimal("1000000"),
    places=12,
    allow_nan=False,
    allow_infinity=False,
)
# A run rates some slots; a slot left out of a run's usage dates keeps its posted amount.
ratings = st.lists(
    st.dictionaries(st.sampled_from([(c, m, d) for c, m in SLOTS for d in DAYS]), money),
    min_size=1,
    max_size=6,
)


def apply(posted: dict[str, CauseTotal], transactions: list) -> None:
    for transaction in transactions:
        previous = posted.get(transaction.cause_id)
        by_account = dict(previous.amount_by_account) if previous else {}
        for entry in transaction.entries:
            by_account[entry.account] = (
                by_account.get(entry.account, Decimal(0)) + entry.amount_minor
            )
        posted[transaction.cause_id] = CauseTotal(
            revisions=(previous.revisions if previous else 0) + 1,
            amount_by_account=by_account,
            currency="usd",
        )


@settings(max_examples=200, deadline=None)
@given(runs=ratings)
def test_the_ledger_ends_at_the_latest_rating_and_reruns_post_nothing(
    runs: list[dict[tuple[str, str, date], Decimal]],
) -> None:
    posted: dict[str, CauseTotal] = {}
    latest: dict[tuple[str, str, date], Decimal] = {}
    keys: set[str] = set()
    for rated in runs:
        slots = [RatedSlot(c, m, d, "usd", amount) for (c, m, d), amount in rated.items()]
        usage_dates = {d for (_, _, d) in rated}
        transactions = plan_usage_accruals(slots, posted=posted, usage_dates=usage_dates)
        for transaction in transactions:
            assert transaction.key not in keys  # a key is never reused for other content
            keys.add(transaction.key)
            assert sum(e.amount_minor for e in transaction.entries) == 0
        apply(posted, transactions)
        # Slots of a rated day that were not rated again go back to zero.
        for key in list(latest):
            if key[2] in usage_dates:
                latest[key] = Decimal(0)
        latest.update(rated)
        assert plan_usage_accruals(slots, posted=posted, usage_dates=usage_dates) == []
    for (customer, meter, day), amount in latest.items():
        total = posted.get(f"{customer}:{meter}:{day.isoformat()}")
        held = total.amount_by_account[unbilled_receivable_account(customer)] if total else 0
        assert held == amount


@settings(max_examples=200, deadline=None)
@given(increments=st.lists(st.integers(min_value=0, max_value=10**9), min_size=1, max_size=8))
def test_meter_events_add_up_to_the_usage_and_are_never_repeated(increments: list[int]) -> None:
    recorded: dict[str, SlotTotal] = {}
    identifiers: set[str] = set()
    quantity = 0
    for increment in increments:
        quantity += increment
        slot = MeterSlot("cus_a", "nimbus_large__input_tokens", DAYS[0], quantity)
        intents, decreases = plan_meter_events([slot], recorded=recorded, usage_dates={DAYS[0]})
        assert decreases == []
        assert len(intents) == (1 if increment else 0)
        for intent in intents:
            identifier = str(intent.request_payload["identifier"])
            assert len(identifier) <= 100 and identifier not in identifiers
            identifiers.add(identifier)
            assert intent.idempotency_key == identifier
            before = recorded.get(intent.slot_id, SlotTotal(0, 0))
            recorded[intent.slot_id] = SlotTotal(
                before.revisions + 1, before.quantity + intent.quantity_delta
            )
        again, _ = plan_meter_events([slot], recorded=recorded, usage_dates={DAYS[0]})
        assert again == []
    assert sum(t.quantity for t in recorded.values()) == quantity


def test_a_decrease_is_reported_not_sent() -> None:
    recorded = {"cus_a:m1:2026-10-01": SlotTotal(revisions=1, quantity=10)}
    intents, decreases = plan_meter_events(
        [MeterSlot("cus_a", "m1", DAYS[0], 7)], recorded=recorded, usage_dates={DAYS[0]}
    )
    assert intents == [] and decreases == ["cus_a:m1:2026-10-01: 10 sent, 7 used now"]
