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
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType

import uvicorn

from stripe_local.app import Clock, create_app
from stripe_local.faults import FaultPlan
from stripe_local.store import LocalStripeStore

HOST = "127.0.0.1"


def make_clock(now: str | int | None) -> Clock:
    """A fixed clock (like Stripe's test clocks) when ``now`` is given, else the real time.

    ``now`` is an ISO timestamp (``2026-10-05T00:00:00Z``) or Unix seconds.
    """
    if now is None:
        return lambda: int(time.time())
    fixed = now if isinstance(now, int) else parse_instant(now)
    return lambda: fixed


def parse_instant(text: str) -> int:
    """Unix seconds of an ISO timestamp such as ``2026-10-05T00:00:00Z`` (naive means UTC)."""
    try:
        instant = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"not an ISO timestamp: {text!r} (e.g. 2026-10-05T00:00:00Z)") from None
    if instant.tzinfo is None:
        instant = instant.replace(tzinfo=UTC)
    return int(instant.timestamp())


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


class LocalStripeServer:
    """``with LocalStripeServer(...) as server:`` serves on ``server.url`` until the block ends.

    State lives in ``db_path`` (SQLite; ``":memory:"`` for none); ``now`` fixes the clock
    (ISO text or Unix seconds), or ``clock`` (a callable returning Unix seconds) drives it, e.g.
    to step past Stripe's 24-hour windows in a test; ``seed_customers_csv`` (a Stripe customers
    export, skipped when absent) is loaded on start; ``faults`` injects errors (see
    ``stripe_local.faults``; ``POST /_local/faults`` changes them while serving). The store is
    closed when the block ends.
    """

    def __init__(
        self,
        port: int = 0,
        db_path: Path | str = ":memory:",
        now: str | int | None = None,
        seed_customers_csv: Path | str | None = None,
        clock: Clock | None = None,
        faults: FaultPlan | None = None,
    ) -> None:
        if now is not None and clock is not None:
            raise ValueError("give either now or clock, not both")
        self.port = port or free_port()
        self.url = f"http://{HOST}:{self.port}"
        clock = clock or make_clock(now)
        if str(db_path) != ":memory:":
            Path(db_path).parent.mkdir(parents=True, exist_ok=True)
        self.store = LocalStripeStore(db_path)
        if seed_customers_csv is not None and Path(seed_customers_csv).exists():
            try:
                self.store.load_customers_csv(Path(seed_customers_csv))
            except BaseException:
                self.store.close()
                raise
        config = uvicorn.Config(
            create_app(self.store, clock, faults),
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
        while not (self._server.started and accepts_connections(self.port)):
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self._stop()
                raise RuntimeError(
                    f"The local Stripe could not start on {self.url} (is the port in use?)."
                )
            time.sleep(0.02)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._stop()

    def _stop(self) -> None:
        self._server.should_exit = True
        if self._thread.is_alive():
            self._thread.join(timeout=10)
        self.store.close()


def accepts_connections(port: int) -> bool:
    """True when something accepts TCP connections on 127.0.0.1:port."""
    try:
        with socket.create_connection((HOST, port), timeout=0.5):
            return True
    except OSError:
        return False


def is_running(url: str) -> bool:
    """True when a local Stripe answers ``GET /_local/stats`` at ``url`` within a second."""
    try:
        with urllib.request.urlopen(f"{url.rstrip('/')}/_local/stats", timeout=1) as response:
            json.loads(response.read())
            return True
    except (urllib.error.URLError, OSError, ValueError):
        return False


def serving_db_path(url: str) -> str | None:
    """Where the local Stripe answering at ``url`` keeps its data (``:memory:`` or an absolute
    path); None when nothing answers or the server does not say."""
    try:
        with urllib.request.urlopen(f"{url.rstrip('/')}/_local/stats", timeout=1) as response:
            return json.loads(response.read()).get("db_path")
    except (urllib.error.URLError, OSError, ValueError, AttributeError):
        return None


def start_detached(
    port: int,
    db_path: Path | str,
    now: str | None = None,
    seed_customers_csv: Path | str | None = None,
    faults: str | None = None,
) -> subprocess.Popen[bytes]:
    """Start ``python -m stripe_local`` in its own session; it outlives the caller.

    Its output goes to ``db_path`` with the suffix ``.log``. Poll ``is_running(url)`` to know
    when it serves; stop it with ``process.terminate()`` (SIGTERM).
    """
    db_path = Path(db_path)
    command = [sys.executable, "-m", "stripe_local", "--port", str(port), "--db", str(db_path)]
    if now:
        parse_instant(now)  # fail here, not in the detached process's log
        command += ["--now", now]
    if seed_customers_csv is not None and Path(seed_customers_csv).exists():
        command += ["--seed-customers", str(seed_customers_csv)]
    if faults:
        FaultPlan.parse(faults)  # fail here too
        command += ["--faults", faults]
    db_path.parent.mkdir(parents=True, exist_ok=True)
    with db_path.with_suffix(".log").open("ab") as log:
        return subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
