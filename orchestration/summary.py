"""What a run left behind, in the figures a person checks first."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

import duckdb
import psycopg

from ledger import Ledger
from stripe_sync import outbox


@dataclass(frozen=True)
class CustomerBill:
    customer_id: str
    currency: str
    amount_minor: int


@dataclass(frozen=True)
class CreditSummary:
    """Credit grants in one currency and what became of them (exact minor units)."""

    currency: str
    grants: int
    granted_minor: Decimal
    applied_minor: Decimal
    expired_minor: Decimal

    @property
    def left_minor(self) -> Decimal:
        return self.granted_minor - self.applied_minor - self.expired_minor


@dataclass(frozen=True)
class PipelineSummary:
    raw_lines: int
    accepted_lines: int
    duplicate_lines: int
    quarantined_lines: int
    quarantine_reasons: dict[str, int]
    bills: list[CustomerBill]
    ledger_transactions: int
    ledger_balanced: bool
    ledger_content_hash: str
    usage_revenue_minor: Decimal
    outbox_states: dict[str, int] = field(default_factory=dict)
    # Per entitlement state (ok / warning / capped): customers in it on their last rated day.
    entitlement_states: dict[str, int] = field(default_factory=dict)
    credits: list[CreditSummary] = field(default_factory=list)

    @property
    def lines_conserved(self) -> bool:
        return self.raw_lines == (
            self.accepted_lines + self.duplicate_lines + self.quarantined_lines
        )


def collect_summary(warehouse_path: str, ledger_url: str) -> PipelineSummary:
    with duckdb.connect(warehouse_path, read_only=True) as conn:
        counts = conn.execute(
            "select coalesce(sum(raw_lines), 0), coalesce(sum(accepted_lines), 0), "
            "coalesce(sum(duplicate_lines), 0), coalesce(sum(quarantined_lines), 0) "
            "from ingest.usage_file_counts"
        ).fetchone()
        reasons = conn.execute(
            "select reason, count(*) from ingest.quarantined_usage_lines group by 1 order by 2 desc"
        ).fetchall()
        bills = conn.execute(
            "select customer_id, currency, sum(amount_minor) from invoice_lines "
            "group by 1, 2 order by 3 desc, 1"
        ).fetchall()
        entitlements = conn.execute(
            "select entitlement_state, count(*) from (select customer_id, "
            "arg_max(entitlement_state, usage_date) as entitlement_state "
            "from customer_entitlements_daily group by customer_id) group by 1 order by 1"
        ).fetchall()
        credits = _credit_summaries(conn)
    assert counts is not None
    with Ledger.connect(ledger_url) as book:
        report = book.verify()
        revenue = -book.balance("platform:usage_revenue", "usd")
    with psycopg.connect(ledger_url, autocommit=True) as conn:
        outbox.ensure_schema(conn)
        states = outbox.state_counts(conn)
    return PipelineSummary(
        raw_lines=int(counts[0]),
        accepted_lines=int(counts[1]),
        duplicate_lines=int(counts[2]),
        quarantined_lines=int(counts[3]),
        quarantine_reasons={reason: int(n) for reason, n in reasons},
        bills=[CustomerBill(c, cur, int(amount)) for c, cur, amount in bills],
        ledger_transactions=report.transactions,
        ledger_balanced=not report.unbalanced_transactions,
        ledger_content_hash=report.content_hash,
        usage_revenue_minor=revenue,
        outbox_states=states,
        entitlement_states={state: int(n) for state, n in entitlements},
        credits=credits,
    )


def _credit_summaries(conn: duckdb.DuckDBPyConnection) -> list[CreditSummary]:
    """From the allocation the last run recorded (billing.credit_*; none before grants)."""
    (tables,) = conn.execute(
        "select count(*) from duckdb_tables() where schema_name = 'billing' "
        "and table_name in ('credit_grants', 'credit_applications', 'credit_expiries')"
    ).fetchone() or (0,)
    if tables < 3:
        return []
    rows = conn.execute(
        """
        select g.currency, count(*), sum(g.amount_minor),
               coalesce(sum(a.applied), 0), coalesce(sum(e.remaining_minor), 0)
        from billing.credit_grants g
        left join (select grant_id, sum(amount_minor) as applied
                   from billing.credit_applications group by 1) a using (grant_id)
        left join billing.credit_expiries e using (grant_id)
        group by 1 order by 1
        """
    ).fetchall()
    return [
        CreditSummary(currency, int(grants), Decimal(granted), Decimal(applied), Decimal(expired))
        for currency, grants, granted, applied, expired in rows
    ]


def format_minor(amount_minor: int | Decimal, currency: str) -> str:
    """Whole minor units as a decimal string in major units (exact, no float)."""
    major = Decimal(amount_minor) / Decimal(100)
    return f"{major:,.2f} {currency.upper()}"
