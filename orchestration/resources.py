"""Dagster resources: the DuckDB warehouse, the PostgreSQL ledger, Stripe and dbt.

Each resource reads its configuration from the environment (see ``settings.py``); the local
Stripe-compatible server is a fake that lives in its own package and is started only when the
configured Stripe address is on this machine.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from functools import cached_property
from importlib.metadata import version as installed_version
from pathlib import Path

import dagster as dg
import duckdb
import stripe
from dagster_dbt import DbtCliResource, DbtProject
from packaging.version import Version

from ledger import Ledger
from ledger.embedded import embedded_ledger_url
from orchestration.settings import (
    DBT_PROJECT_DIR,
    LOCAL_STRIPE_API_KEY,
    Settings,
    get_settings,
)

dbt_project = DbtProject(project_dir=DBT_PROJECT_DIR, profiles_dir=DBT_PROJECT_DIR)


class MeterbookDbtCliResource(DbtCliResource):
    """dbt's CLI without two start-up costs of every invocation that this project does not use.

    dagster-dbt asks the ``dbt`` executable for its version (a subprocess that imports dbt, ~3 s)
    and builds a dbt adapter inside the Dagster process (~4 s), which serves only for fetching
    row counts and column metadata. Meterbook runs the dbt-core installed from ``uv.lock`` and
    fetches neither, so each billing run saves both, twice (billing and finance dbt steps).
    """

    @cached_property
    def _cli_version(self) -> Version:
        return Version(installed_version("dbt-core"))

    def _initialize_dbt_core_adapter(self, args: Sequence[str]) -> None:  # type: ignore[override]
        return None


class WarehouseResource(dg.ConfigurableResource):
    """The DuckDB warehouse file. One writing process at a time: callers open, use and close."""

    path: str
    # DuckDB takes 80 % of RAM by default; capped, it spills large joins and sorts to disk.
    memory_limit: str = "1GB"
    # Where the read-only copy the billing API reads is published (api/snapshot.py).
    api_snapshot_dir: str | None = None

    @contextmanager
    def connect(self) -> Iterator[duckdb.DuckDBPyConnection]:
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        conn = duckdb.connect(self.path, config={"memory_limit": self.memory_limit})
        try:
            yield conn
        finally:
            conn.close()


class LedgerResource(dg.ConfigurableResource):
    """The ledger's PostgreSQL: ``url`` when set, else a private server under ``data_dir``."""

    url: str | None = None
    data_dir: str

    def resolved_url(self) -> str:
        if self.url:
            return self.url
        Path(self.data_dir).parent.mkdir(parents=True, exist_ok=True)
        return embedded_ledger_url(Path(self.data_dir))

    @contextmanager
    def open(self) -> Iterator[Ledger]:
        ledger = Ledger.connect(self.resolved_url())
        try:
            yield ledger
        finally:
            ledger.close()


class StripeResource(dg.ConfigurableResource):
    """A ``stripe.StripeClient``; with a 127.0.0.1 address it starts the local server if needed."""

    api_base: str
    api_key: str
    local_db: str
    local_now: str | None = None
    local_seed_customers_csv: str | None = None
    local_faults: str | None = None
    # Where v2 meter event streams go: Stripe's meter-events host, or the local server.
    meter_events_base: str = "https://meter-events.stripe.com"
    meter_events_api: str = "stream"
    timeout_seconds: float = 30.0
    # Start the local server when api_base is on this machine and nothing answers there.
    autostart_local: bool = True

    @property
    def is_local(self) -> bool:
        return self.api_base.startswith(("http://127.0.0.1", "http://localhost"))

    def client(self) -> stripe.StripeClient:
        """A client with the secret key; starts the local server first when configured to.

        The same code talks to Stripe and to the local server: only the configured addresses
        differ. Retries are ours (the outbox's sender), so the client's own are off.
        """
        if self.is_local and self.autostart_local:
            self._ensure_local_server()
        return self.client_with_key(self.api_key)

    def client_with_key(self, api_key: str) -> stripe.StripeClient:
        """A client with the same addresses and timeout and another key (a meter event
        session token)."""
        return stripe.StripeClient(
            api_key,
            base_addresses={"api": self.api_base, "meter_events": self.meter_events_base},
            max_network_retries=0,
            http_client=stripe.new_default_http_client(timeout=self.timeout_seconds),
        )

    def _ensure_local_server(self) -> None:
        from stripe_local.server import is_running, serving_db_path, start_detached

        if is_running(self.api_base):
            self._refuse_another_data_directorys_server(serving_db_path(self.api_base))
            return
        port = int(self.api_base.rsplit(":", 1)[1].split("/")[0])
        process = start_detached(
            port=port,
            db_path=Path(self.local_db),
            now=self.local_now,
            seed_customers_csv=(
                Path(self.local_seed_customers_csv) if self.local_seed_customers_csv else None
            ),
            faults=self.local_faults,
        )
        # The server outlives this run; its pid file is how a person stops it.
        Path(self.local_db).with_suffix(".pid").write_text(f"{process.pid}\n")
        deadline = time.monotonic() + 20
        while not is_running(self.api_base):
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"The local Stripe server did not start on {self.api_base} within 20 s; "
                    f"see {Path(self.local_db).with_suffix('.log')}."
                )
            time.sleep(0.1)

    def _refuse_another_data_directorys_server(self, serving: str | None) -> None:
        """A detached local Stripe outlives its run; one started for another data directory
        must not receive this one's usage (a server in memory is a test's own, and accepted)."""
        if serving is None or serving == ":memory:":
            return
        if Path(serving).resolve() != Path(self.local_db).resolve():
            raise RuntimeError(
                f"The local Stripe on {self.api_base} keeps its data in {serving}, not in this "
                f"data directory's {self.local_db}: this run's usage would reach another "
                f"Stripe. Stop that server (its pid is in {Path(serving).with_suffix('.pid')}) "
                "or set METERBOOK_STRIPE_API_BASE to another port on 127.0.0.1."
            )


def _secret(name: str, default: str | None) -> dg.EnvVar | str | None:
    """Secrets reach Dagster as ``EnvVar`` so their values never show in run config or the UI."""
    return dg.EnvVar(name) if os.environ.get(name) else default


def ledger_url_outside_dagster(settings: Settings | None = None) -> str:
    """The ledger's URL for code that runs outside a Dagster run (the CLI): the resource's
    ``EnvVar`` is only resolved by Dagster, so read the same variable here."""
    settings = settings or get_settings()
    return LedgerResource(
        url=os.environ.get("METERBOOK_LEDGER_URL") or None, data_dir=str(settings.ledger_data_dir)
    ).resolved_url()


def build_resources(settings: Settings | None = None) -> dict[str, object]:
    settings = settings or get_settings()
    return {
        "warehouse": WarehouseResource(
            path=str(settings.warehouse_path),
            memory_limit=settings.duckdb_memory_limit,
            api_snapshot_dir=str(settings.api_snapshot_dir),
        ),
        "ledger": LedgerResource(
            url=_secret("METERBOOK_LEDGER_URL", None), data_dir=str(settings.ledger_data_dir)
        ),
        "stripe": StripeResource(
            api_base=settings.stripe_api_base,
            api_key=_secret("STRIPE_API_KEY", LOCAL_STRIPE_API_KEY),
            local_db=str(settings.stripe_local_db),
            local_now=settings.stripe_local_now,
            local_seed_customers_csv=str(settings.raw_stripe_dir / "customers.csv"),
            local_faults=settings.stripe_local_faults,
            meter_events_base=settings.stripe_meter_events_base,
            meter_events_api=settings.stripe_meter_events_api,
            autostart_local=settings.stripe_local_autostart,
            timeout_seconds=settings.stripe_timeout_seconds,
        ),
        "dbt": MeterbookDbtCliResource(project_dir=dbt_project, profiles_dir=str(DBT_PROJECT_DIR)),
    }
