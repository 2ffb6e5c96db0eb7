"""invoice_accuracy at the size of a real customer base: 2,000 invoices in a period (the share
was once cast to DECIMAL(9, 6) before dividing, which overflows from 1,000 invoices)."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import duckdb

from tests.dbt_cli import run_dbt

INVOICES = 2_000


def test_the_matching_share_of_two_thousand_invoices(tmp_path: Path) -> None:
    warehouse = tmp_path / "warehouse.duckdb"
    with duckdb.connect(str(warehouse)) as conn:
        conn.execute(
            """
            create table int_invoice_reconciliation as
            select 'cus_' || n as customer_id, date '2026-10-01' as billing_period_start_date,
                'usd' as currency, cast(100 as decimal(38, 12)) as meterbook_amount_minor,
                cast(case when n = 0 then 90 else 100 end as decimal(38, 12))
                    as stripe_amount_minor,
                cast(case when n = 0 then -10 else 0 end as decimal(38, 12))
                    as stripe_difference_minor,
                case when n = 0 then 'missing_usage' else 'ok' end as status
            from range(?) as t(n)
            """,
            [INVOICES],
        )
    built = run_dbt("run", "--select", "invoice_accuracy", warehouse=warehouse, work_dir=tmp_path)
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-2000:]
    with duckdb.connect(str(warehouse), read_only=True) as conn:
        row = conn.execute(
            "select invoices_compared, invoices_matching, matching_share, "
            "revenue_at_risk_minor from invoice_accuracy"
        ).fetchone()
    assert row == (INVOICES, INVOICES - 1, Decimal("0.999500"), Decimal(10))
