"""The server's lifecycle: persistence across restarts, seeding, and the detached process."""

from __future__ import annotations

import csv
import subprocess
import sys
import time
from pathlib import Path

import pytest
import stripe

from stripe_local.server import LocalStripeServer, free_port, is_running, start_detached
from tests.stripe_local.helpers import NOW, NOW_ISO, client_for, make_meter, send


def write_export(path: Path, rows: list[list[str]]) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "email", "name", "currency", "created", "metadata"])
        writer.writerows(rows)
    return path


def test_state_survives_a_restart_and_customers_seed_from_an_export(tmp_path: Path) -> None:
    export = write_export(
        tmp_path / "customers.csv",
        [
            ["cus_exported01", "e@example.com", "E", "usd", "1756684800", "{}"],
            ["cus_exported02", "f@example.com", "F", "eur", "1756684801", '{"plan_id":"pro"}'],
        ],
    )
    db = tmp_path / "state" / "stripe.sqlite3"
    with LocalStripeServer(db_path=db, now=NOW_ISO, seed_customers_csv=export) as first:
        client = client_for(first)
        make_meter(client)
        send(client, "cus_exported01", 3, identifier="kept", key="kept")
        assert first.store.load_customers_csv(export) == 2  # seeding again changes nothing
        assert first.store.count("customer") == 2
    with LocalStripeServer(db_path=db, now=NOW, seed_customers_csv=export) as second:
        client = client_for(second)
        assert [e["identifier"] for e in second.store.meter_events()] == ["kept"]
        seeded = client.v1.customers.retrieve("cus_exported02")
        assert (seeded.email, seeded.currency, seeded.created) == (
            "f@example.com",
            "eur",
            1756684801,
        )
        assert seeded.metadata.to_dict() == {"plan_id": "pro"}
        listed = client.v1.customers.list().data
        assert [c.id for c in listed] == ["cus_exported02", "cus_exported01"]
        replay = send(client, "cus_exported01", 3, identifier="kept", key="kept")
        assert replay.last_response is not None
        assert replay.last_response.headers["Idempotent-Replayed"] == "true"
        with pytest.raises(stripe.InvalidRequestError, match="already exists with identifier"):
            send(client, "cus_exported01", 3, identifier="kept")
        with pytest.raises(stripe.InvalidRequestError, match="already exists"):
            make_meter(client)
        assert second.store.count("customer") == 2


def test_a_malformed_export_is_refused_whole(tmp_path: Path) -> None:
    export = write_export(
        tmp_path / "customers.csv",
        [
            ["cus_fine", "a@example.com", "A", "usd", "1756684800", "{}"],
            ["cus_bad", "b@example.com", "B", "usd", "1756684800", '["not", "an", "object"]'],
        ],
    )
    with pytest.raises(ValueError, match=r"customers\.csv:3: metadata"):
        LocalStripeServer(db_path=tmp_path / "s.sqlite3", seed_customers_csv=export)
    with LocalStripeServer(db_path=tmp_path / "s.sqlite3") as server:
        assert server.store.count("customer") == 0  # nothing of the file was kept


def test_detached_server_runs_in_its_own_process(tmp_path: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    assert not is_running(url)
    export = write_export(tmp_path / "customers.csv", [["cus_d", "", "", "usd", "1", "{}"]])
    process = start_detached(
        port=port, db_path=tmp_path / "detached.sqlite3", now=NOW_ISO, seed_customers_csv=export
    )
    try:
        deadline = time.monotonic() + 15
        while not is_running(url) and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert is_running(url), (tmp_path / "detached.log").read_text()
        client = stripe.StripeClient(
            "sk_test_1", base_addresses={"api": url, "meter_events": url}, max_network_retries=0
        )
        assert client.v1.customers.retrieve("cus_d").created == 1
    finally:
        process.terminate()
        process.wait(timeout=10)
    assert not is_running(url)


def test_the_command_line_refuses_a_missing_seed_file(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "stripe_local",
            "--db",
            str(tmp_path / "s.sqlite3"),
            "--seed-customers",
            str(tmp_path / "absent.csv"),
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2 and "no such file" in result.stderr


def test_a_run_refuses_the_local_stripe_of_another_data_directory(tmp_path: Path) -> None:
    """A detached local Stripe outlives its run on its port; a run of another data directory
    must not send its usage there (it used to, silently)."""
    from orchestration.resources import StripeResource

    ours, theirs = tmp_path / "ours.sqlite3", tmp_path / "theirs.sqlite3"
    with LocalStripeServer(db_path=theirs, now=NOW_ISO) as server:
        resource = StripeResource(api_base=server.url, api_key="sk_test_1", local_db=str(ours))
        with pytest.raises(RuntimeError, match=r"keeps its data in .*theirs\.sqlite3"):
            resource.client()
        same = StripeResource(api_base=server.url, api_key="sk_test_1", local_db=str(theirs))
        assert same.client() is not None
    # A test's own server in memory is accepted whatever the data directory.
    with LocalStripeServer(db_path=":memory:", now=NOW_ISO) as server:
        resource = StripeResource(api_base=server.url, api_key="sk_test_1", local_db=str(ours))
        assert resource.client() is not None
