"""Who the customers are, and their currency: the Stripe export of customers
(``data/raw/stripe/customers.csv``, the same file ingestion treats as the list of known
customers; ``meterbook stripe pull-catalog`` refreshes it). A plain file, so the API never opens
the warehouse for it; re-read when it changes."""

from __future__ import annotations

import csv
import threading
from pathlib import Path

from api.errors import ApiError


class CustomerDirectory:
    def __init__(self, customers_csv: Path) -> None:
        self._path = customers_csv
        self._lock = threading.Lock()
        self._version: tuple[int, int] | None = None
        self._currency_by_customer: dict[str, str] = {}

    def currency_of(self, customer_id: str) -> str:
        """The customer's currency; a 404 for a customer Stripe's export does not have."""
        currency = self._current().get(customer_id)
        if currency is None:
            raise ApiError(
                404,
                "unknown_customer",
                f"There is no customer {customer_id!r} in the Stripe export of customers.",
            )
        return currency

    def _current(self) -> dict[str, str]:
        try:
            stat = self._path.stat()
        except FileNotFoundError:
            return {}
        version = (stat.st_mtime_ns, stat.st_size)
        with self._lock:
            if version != self._version:
                with self._path.open(newline="") as handle:
                    self._currency_by_customer = {
                        row["id"]: row["currency"].lower() for row in csv.DictReader(handle)
                    }
                self._version = version
            return self._currency_by_customer
