"""The embedded PostgreSQL: reused per data directory, and refused on paths too long for it."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from ledger import embedded_ledger_url


def test_the_server_of_a_data_directory_is_reused(postgres_url: str) -> None:
    data_dir = Path(parse_qs(urlsplit(postgres_url).query)["host"][0])
    assert embedded_ledger_url(data_dir) == postgres_url
    assert embedded_ledger_url(data_dir / ".." / data_dir.name) == postgres_url


def test_a_data_directory_too_long_for_a_socket_is_refused(tmp_path: Path) -> None:
    too_long = tmp_path / ("x" * 100)
    with pytest.raises(ValueError, match="Use a shorter path"):
        embedded_ledger_url(too_long)
    assert not too_long.exists()
