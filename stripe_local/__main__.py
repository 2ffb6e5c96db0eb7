"""``python -m stripe_local --port 12111 --db PATH [--now ISO] [--seed-customers CSV]
[--faults rate=0.1,kinds=429+500+timeout+lost,seed=7]``"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from pathlib import Path

from stripe_local.faults import FaultPlan
from stripe_local.server import LocalStripeServer, parse_instant


def main(argv: list[str] | None = None) -> None:
    """Serve on 127.0.0.1 until interrupted (Ctrl-C or SIGTERM)."""
    parser = argparse.ArgumentParser(description="A strict Stripe-compatible server on 127.0.0.1.")
    parser.add_argument("--port", type=int, default=12111)
    parser.add_argument("--db", type=Path, default=Path("data/stripe_local.sqlite3"))
    parser.add_argument("--now", help="fixed clock, e.g. 2026-10-05T00:00:00Z (default: real time)")
    parser.add_argument("--seed-customers", type=Path, help="a Stripe customers export CSV")
    parser.add_argument(
        "--faults", help="inject faults, e.g. rate=0.1,kinds=429+500+timeout+lost,seed=7"
    )
    args = parser.parse_args(argv)
    faults = None
    if args.faults:
        try:
            faults = FaultPlan.parse(args.faults)
        except ValueError as error:
            parser.error(f"--faults: {error}")
    if args.now:
        try:
            parse_instant(args.now)
        except ValueError as error:
            parser.error(f"--now: {error}")
    if args.seed_customers is not None and not args.seed_customers.is_file():
        parser.error(f"--seed-customers: no such file: {args.seed_customers}")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    with LocalStripeServer(
        port=args.port,
        db_path=args.db,
        now=args.now,
        seed_customers_csv=args.seed_customers,
        faults=faults,
    ) as server:
        print(f"Local Stripe on {server.url} (state in {args.db})", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
