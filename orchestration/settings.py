"""Configuration from environment variables, with local defaults that need no set-up.

Everything lives under one data directory (``METERBOOK_DATA_DIR``, default ``./data``): raw files,
the DuckDB warehouse, the embedded PostgreSQL ledger, the local Stripe's state and the Dagster
instance home. Secrets (a real Stripe key, a ledger password) come only from the environment.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DBT_PROJECT_DIR = PROJECT_ROOT / "dbt_project"
LOCAL_STRIPE_API_KEY = "sk_test_meterbook_local"
LOCAL_STRIPE_PORT = 12111

# Telemetry would wait on hosts this pipeline must never contact.
os.environ.setdefault("DBT_SEND_ANONYMOUS_USAGE_STATS", "false")
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")


@dataclass(frozen=True)
class Settings:
    data_dir: Path
    # Raw usage logs (raw_dir/usage) and Stripe exports (raw_dir/stripe).
    raw_dir: Path
    warehouse_path: Path
    # The price book's CSV files (dbt reads them as seeds; docs/pricing.md has the format).
    price_book_dir: Path
    ledger_url: str | None
    stripe_api_base: str
    stripe_api_key: str
    stripe_local_now: str | None
    stripe_meter_events_base: str
    stripe_local_autostart: bool
    # "stream": the v2 meter event stream (100 events a request); "v1": one request per event.
    stripe_meter_events_api: str
    stripe_timeout_seconds: float
    # Faults the local Stripe injects (a test and demo tool), e.g. "rate=0.1,seed=7".
    stripe_local_faults: str | None
    partitions_start_date: str
    duckdb_memory_limit: str

    @property
    def raw_usage_dir(self) -> Path:
        return self.raw_dir / "usage"

    @property
    def raw_stripe_dir(self) -> Path:
        return self.raw_dir / "stripe"

    @property
    def ledger_data_dir(self) -> Path:
        return self.data_dir / "ledger_pg"

    @property
    def api_snapshot_dir(self) -> Path:
        """Where each run publishes the read-only copy of the marts the billing API reads."""
        return self.data_dir / "api_snapshot"

    @property
    def stripe_local_db(self) -> Path:
        return self.data_dir / "stripe_local.sqlite3"

    @property
    def dagster_home(self) -> Path:
        return self.data_dir / "dagster"

    @property
    def uses_local_stripe(self) -> bool:
        return _is_local(self.stripe_api_base)


def get_settings() -> Settings:
    """Read the environment once per call; tests change it with monkeypatch."""
    data_dir = Path(os.environ.get("METERBOOK_DATA_DIR", PROJECT_ROOT / "data")).resolve()
    api_base = os.environ.get(
        "METERBOOK_STRIPE_API_BASE", f"http://127.0.0.1:{LOCAL_STRIPE_PORT}"
    ).rstrip("/")
    return Settings(
        data_dir=data_dir,
        raw_dir=Path(os.environ.get("METERBOOK_RAW_DIR", data_dir / "raw")).resolve(),
        warehouse_path=Path(
            os.environ.get("METERBOOK_WAREHOUSE_PATH", data_dir / "warehouse.duckdb")
        ).resolve(),
        price_book_dir=price_book_dir(),
        ledger_url=os.environ.get("METERBOOK_LEDGER_URL") or None,
        stripe_api_base=api_base,
        stripe_meter_events_base=os.environ.get(
            "METERBOOK_STRIPE_METER_EVENTS_BASE",
            api_base if _is_local(api_base) else "https://meter-events.stripe.com",
        ).rstrip("/"),
        stripe_local_autostart=os.environ.get("METERBOOK_STRIPE_LOCAL_AUTOSTART", "1") != "0",
        stripe_api_key=os.environ.get("STRIPE_API_KEY", LOCAL_STRIPE_API_KEY),
        stripe_local_now=os.environ.get("METERBOOK_STRIPE_LOCAL_NOW") or None,
        stripe_meter_events_api=_choice(
            "METERBOOK_STRIPE_METER_EVENTS_API", ("stream", "v1"), default="stream"
        ),
        stripe_timeout_seconds=float(os.environ.get("METERBOOK_STRIPE_TIMEOUT_SECONDS", "30")),
        stripe_local_faults=os.environ.get("METERBOOK_STRIPE_LOCAL_FAULTS") or None,
        partitions_start_date=os.environ.get("METERBOOK_PARTITIONS_START", "2025-01-01"),
        duckdb_memory_limit=os.environ.get("METERBOOK_DUCKDB_MEMORY_LIMIT", "1GB"),
    )


def price_book_dir() -> Path:
    """``METERBOOK_PRICE_BOOK_DIR`` (dbt's seed path reads the same variable), else the
    project's own price book."""
    configured = os.environ.get("METERBOOK_PRICE_BOOK_DIR")
    return Path(configured).resolve() if configured else DBT_PROJECT_DIR / "seeds"


def _choice(name: str, allowed: tuple[str, ...], *, default: str) -> str:
    value = os.environ.get(name, default)
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(allowed)}, not {value!r}.")
    return value


def _is_local(url: str) -> bool:
    return url.startswith(("http://127.0.0.1", "http://localhost"))
