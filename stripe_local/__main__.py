"""``python -m stripe_local --port 12111 --db data/stripe_local.sqlite3``"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from stripe_local.server import LocalStripeServer


def main() -> None:
    parser = argparse.ArgumentParser(description="A strict Stripe-compatible server on 127.0.0.1.")
    parser.add_argument("--port", type=int, default=12111)
    parser.add_argument("--db", type=Path, default=Path("data/stripe_local.sqlite3"))
    parser.add_argument("--now", help="fixed clock, e.g. 2026-10-05T00:00:00Z")
    parser.add_argument("--seed-customers", type=Path, help="a Stripe customers export CSV")
    args = parser.parse_args()
    args.db.parent.mkdir(parents=True, exist_ok=True)
    with LocalStripeServer(
        port=args.port, db_path=args.db, now=args.now, seed_customers_csv=args.seed_customers
    ) as server:
        print(f"Local Stripe on {server.url} (state in {args.db})", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
