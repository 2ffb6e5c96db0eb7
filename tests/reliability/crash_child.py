"""The pipeline as the harness's child process: ``python -m tests.reliability.crash_child``.

Runs ``orchestration.runner.run_days`` over the given arrival days, as ``meterbook backfill``
does, and prints one JSON line per Dagster run. The environment (data directory, ledger URL,
Stripe address, ``METERBOOK_CRASH_AT``) comes from the parent. Exit status 0 when every run
succeeded, 1 when one failed; SIGKILL when a crash point fired.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import date

from orchestration.runner import run_days
from orchestration.settings import get_settings


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("first_day", type=date.fromisoformat)
    parser.add_argument("last_day", type=date.fromisoformat)
    parser.add_argument("--chunk-days", type=int, default=31)
    arguments = parser.parse_args()
    outcomes = run_days(
        get_settings(),
        arguments.first_day,
        arguments.last_day,
        chunk_days=arguments.chunk_days,
        on_chunk_done=lambda outcome: print(
            json.dumps(
                {
                    "run_id": outcome.run_id,
                    "first_day": outcome.first_day.isoformat(),
                    "last_day": outcome.last_day.isoformat(),
                    "success": outcome.success,
                }
            ),
            flush=True,
        ),
    )
    return 0 if outcomes and all(outcome.success for outcome in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
