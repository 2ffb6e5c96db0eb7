"""A posting process for the crash and multi-process tests: posts a deterministic day of usage
accruals in batches, printing a line as each batch starts and ends.

    python -m tests.ledger.posting_worker URL --slots N --batch B [--first I] [--reverse]
"""

from __future__ import annotations

import argparse
import sys
from datetime import date
from decimal import Decimal

from ledger import Ledger, Transaction
from ledger.usage_accruals import RatedSlot, plan_usage_accruals

DAY = date(2026, 10, 1)


def day_of_accruals(slots: int) -> list[Transaction]:
    """``slots`` customer-meter slots of one day, with exact sub-cent amounts."""
    rated = [
        RatedSlot(
            customer_id=f"c{number % 500:03d}",
            meter_id=f"m{number // 500:03d}",
            usage_date=DAY,
            currency="usd",
            amount_minor=Decimal(number * 7919 % 100_000) / Decimal(1000) + Decimal("0.001"),
        )
        for number in range(slots)
    ]
    return plan_usage_accruals(rated, posted={}, usage_dates={DAY})


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("--slots", type=int, required=True)
    parser.add_argument("--batch", type=int, required=True)
    parser.add_argument("--first", type=int, default=0, help="start at this transaction")
    parser.add_argument("--reverse", action="store_true", help="post the batches last first")
    args = parser.parse_args()
    transactions = day_of_accruals(args.slots)[args.first :]
    batches = [
        transactions[start : start + args.batch]
        for start in range(0, len(transactions), args.batch)
    ]
    if args.reverse:
        batches.reverse()
    with Ledger.connect(args.url) as book:
        for number, batch in enumerate(batches):
            print(f"start {number}", flush=True)
            result = book.post_many(batch)
            print(f"done {number} created={result.created} existing={result.existing}", flush=True)
    sys.exit(0)


if __name__ == "__main__":
    main()
