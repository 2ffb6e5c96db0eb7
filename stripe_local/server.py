"""Run the local Stripe: in a background thread (tests, the demo) or as a detached process."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from datetime import datetime
from pathlib import Path
from types import TracebackType

import uvicorn

from stripe_local.app import Clock, create_app
from stripe_local.store import LocalStripeStore

HOST = "127.0.0.1"


def make_clock(now: str | None) -> Clock:
    """A fixed clock (like Stripe's test clocks) when ``now`` is given, else the real time."""
    if now is None:
        return lambda: int(time.time())
    fixed = int(datetime.fromisoformat(now.replace("Z", "+00:00")).timestamp())
    return lambda: fixed


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


class LocalStripeServer:
    """``with LocalStripeServer(...) as server:`` serves on ``server.url`` until the block ends."""

    def __init__(
        self,
        port: int = 0,
        db_path: Path | str = ":memory:",
        now: str | None = None,
        seed_customers_csv: Path | None = None,
    ) -> None:
        self.port = port or free_port()
        self.url = f"http://{HOST}:{self.port}"
        self.store = LocalStripeStore(db_path)
        if seed_customers_csv is not None and Path(seed_customers_csv).exists():
            self.store.load_customers_csv(Path(seed_customers_csv))
        config = uvicorn.Config(
            create_app(self.store, make_clock(now)),
            host=HOST,
            port=self.port,
            log_level="warning",
            lifespan="off",
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)

    def __enter__(self) -> LocalStripeServer:
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"The local Stripe could not start on {self.url}.")
            time.sleep(0.02)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)


def is_running(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/_local/stats", timeout=1) as response:
            json.loads(response.read())
            return True
    except (urllib.error.URLError, OSError, ValueError):
        return False


def start_detached(
    port: int, db_path: Path, now: str | None = None, seed_customers_csv: Path | None = None
) -> subprocess.Popen[bytes]:
    """Start ``python -m stripe_local`` in its own session; it outlives the caller."""
    command = [sys.executable, "-m", "stripe_local", "--port", str(port), "--db", str(db_path)]
    if now:
        command += ["--now", now]
    if seed_customers_csv is not None and seed_customers_csv.exists():
        command += ["--seed-customers", str(seed_customers_csv)]
    db_path.parent.mkdir(parents=True, exist_ok=True)
    log = db_path.with_suffix(".log").open("ab")
    return subprocess.Popen(
        command,
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
