"""50 concurrent credit grants under 10 Idempotency-Keys while another process posts a day of
usage accruals to the same ledger (the pipeline's posting step, ``tests.ledger.posting_worker``):
exactly 10 grants, every replay answered with the original, a balanced ledger."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import psycopg

from ledger import Ledger
from tests.api.conftest import ApiServer

REQUESTS = 50
KEYS = 10
# Enough batches that the posting is still going when the last grant is answered (asserted).
ACCRUAL_SLOTS = 20_000
ACCRUAL_BATCH = 100


def test_concurrent_grants_with_replays_while_usage_is_posted(api: ApiServer) -> None:
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.ledger.posting_worker",
            api.ledger_url,
            "--slots",
            str(ACCRUAL_SLOTS),
            "--batch",
            str(ACCRUAL_BATCH),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert worker.stdout is not None
    assert worker.stdout.readline().startswith("start 0")  # the pipeline is posting now
    barrier = threading.Barrier(REQUESTS)

    def grant(number: int) -> tuple[int, int, dict[str, Any], bool]:
        key_number = number % KEYS
        body = {
            "amount_minor": str(100 + key_number),
            "currency": "usd",
            "reason": f"goodwill {key_number}",
        }
        with api.client("support") as client:
            barrier.wait(timeout=30)
            response = client.post(
                f"/customers/c{key_number:03d}/credits",
                json=body,
                headers={"Idempotency-Key": f"concurrent-{key_number}"},
            )
        replayed = response.headers.get("idempotent-replayed") == "true"
        return key_number, response.status_code, response.json(), replayed

    with ThreadPoolExecutor(max_workers=REQUESTS) as pool:
        results = list(pool.map(grant, range(REQUESTS)))
    assert worker.poll() is None, "the usage posting ended before the grants: no overlap"
    worker_output, _ = worker.communicate(timeout=300)
    assert worker.returncode == 0, worker_output

    assert {status for _, status, _, _ in results} == {201}, results
    bodies: dict[int, list[dict[str, Any]]] = defaultdict(list)
    originals: dict[int, int] = defaultdict(int)
    for key_number, _, body, replayed in results:
        bodies[key_number].append(body)
        originals[key_number] += not replayed
    assert len(bodies) == KEYS
    for key_number, answers in bodies.items():
        assert all(answer == answers[0] for answer in answers), key_number
        assert originals[key_number] == 1, key_number
    with psycopg.connect(api.ledger_url) as conn:
        kinds = dict(
            conn.execute("select kind, count(*) from ledger.transactions group by kind").fetchall()
        )
        audit_rows = conn.execute("select count(*) from api.audit_log").fetchone()
    assert kinds == {"credit_grant": KEYS, "usage_accrual": ACCRUAL_SLOTS}
    assert audit_rows == (KEYS,)
    with Ledger.connect(api.ledger_url) as book:
        report = book.verify(recompute_hashes=True)
    assert report.ok, report.problems()
