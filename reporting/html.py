"""The finance report as one self-contained HTML page.

The Vega, Vega-Lite and vega-embed JavaScript (bundled by ``vl-convert-python``) is inlined once
in the page head, and every chart's data is inline in its spec: the file can be mailed or
archived and still opens offline. Each chart container gets ``data-rendered`` once vega-embed has
drawn it (or ``data-error``), so a test can tell a drawn chart from a page whose script failed.
"""

from __future__ import annotations

import json
from decimal import Decimal
from html import escape
from pathlib import Path

import altair as alt
import vl_convert

from reporting import charts
from reporting.finance_report import (
    ACCURACY_TABLE,
    DISCREPANCIES_SHOWN,
    DISCREPANCIES_TABLE,
    FinanceReport,
    InvoiceAccuracy,
    LagDay,
    Revenue,
)
from reporting.money import format_money

EMBED_OPTIONS = {"mode": "vega-lite", "renderer": "svg", "actions": False}

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 1100px; color: #1d232b; }
h1 { margin-bottom: 0.2rem; } h2 { border-bottom: 1px solid #d5dae1; padding-bottom: 0.2rem; }
dl.header { display: grid; grid-template-columns: max-content auto; gap: 0.2rem 1rem; }
dl.header dt { font-weight: 600; } dl.header dd { margin: 0; }
table { border-collapse: collapse; margin: 0.8rem 0; font-size: 0.9rem; }
th, td { padding: 0.25rem 0.7rem; border-bottom: 1px solid #e3e7ec; text-align: left; }
td.number, th.number { text-align: right; font-variant-numeric: tabular-nums; }
tr.total td { font-weight: 600; border-top: 2px solid #9aa5b1; }
.missing { background: #fff4e0; border-left: 4px solid #e0a030; padding: 0.6rem 0.9rem; }
.ok { color: #2f7a3e; font-weight: 600; } .bad { color: #b33a1f; font-weight: 600; }
.note { color: #5a6470; font-size: 0.85rem; }
.chart { margin: 0.8rem 0 1.6rem; min-height: 40px; }
"""

RENDER_SCRIPT = """
for (const [id, spec] of Object.entries(REPORT_CHARTS)) {
  const element = document.getElementById(id);
  vegaEmbed(element, spec, REPORT_EMBED_OPTIONS)
    .then(() => element.setAttribute("data-rendered", "true"))
    .catch((error) => {
      element.setAttribute("data-error", String(error));
      element.textContent = "This chart could not be drawn: " + error;
    });
}
"""


def write_report(report: FinanceReport, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_report(report), encoding="utf-8")
    return path


def render_report(report: FinanceReport) -> str:
    """The whole page; charts are drawn by the inlined JavaScript when it opens."""
    chart_specs: dict[str, charts.Spec] = {}
    body = "\n".join(
        [
            _header(report),
            _accuracy_section(report.accuracy, chart_specs),
            _revenue_section(report.revenue, chart_specs),
            _lag_section(report.lag, chart_specs),
        ]
    )
    title = f"Finance report {report.period.label} · Meterbook"
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{escape(title)}</title>
<style>{STYLE}</style>
<script>
{_javascript_bundle()}
</script>
</head>
<body>
{body}
<script>
const REPORT_CHARTS = {_script_json(chart_specs)};
const REPORT_EMBED_OPTIONS = {_script_json(EMBED_OPTIONS)};
{RENDER_SCRIPT}
</script>
</body>
</html>
"""


def _javascript_bundle() -> str:
    """vega + vega-lite + vega-embed, for the Vega-Lite version Altair writes its specs in."""
    major, minor = alt.SCHEMA_VERSION.lstrip("v").split(".")[:2]
    bundle = vl_convert.javascript_bundle(vl_version=f"{major}.{minor}")
    # A closing tag inside the bundle would end the script element early.
    assert "</script" not in bundle.lower()
    return bundle


def _script_json(value: object) -> str:
    """JSON safe inside a <script>: <, > and & only occur in strings, where escapes mean them."""
    text = json.dumps(value, sort_keys=True)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _chart(chart_id: str, spec: charts.Spec, chart_specs: dict[str, charts.Spec]) -> str:
    chart_specs[f"chart-{chart_id}"] = spec
    return f'<div class="chart" id="chart-{chart_id}" data-chart="{chart_id}"></div>'


def _header(report: FinanceReport) -> str:
    period = report.period
    ledger = report.ledger
    if ledger is None:
        balanced = '<span class="note">no ledger replica in the warehouse yet</span>'
    elif ledger.balanced:
        balanced = (
            f'<span class="ok">yes</span>: all {ledger.transactions:,} replicated transactions '
            "sum to zero per currency"
        )
    else:
        balanced = (
            f'<span class="bad">no</span>: {ledger.unbalanced_transactions:,} of '
            f"{ledger.transactions:,} replicated transactions do not sum to zero"
        )
    last_day = period.end.toordinal() - 1
    return f"""<header>
<h1>Finance report · {escape(period.label)}</h1>
<dl class="header">
<dt>Billing period</dt><dd>{period.start.isoformat()} to {period.start.fromordinal(last_day)}
 (UTC): the billing periods that begin in it</dd>
<dt>Generated at</dt><dd>{report.generated_at:%Y-%m-%d %H:%M:%S} UTC</dd>
<dt>Warehouse</dt><dd><code>{escape(str(report.warehouse_path))}</code></dd>
<dt>Ledger balanced</dt><dd>{balanced}</dd>
</dl>
</header>"""


def _missing(tables: list[str]) -> str:
    names = ", ".join(f"<code>{escape(name)}</code>" for name in tables)
    return (
        '<p class="missing"><strong>Not computed yet</strong>: run the pipeline '
        f"(<code>meterbook run</code> or <code>backfill</code>); missing in the warehouse: {names}."
        "</p>"
    )


def _table(
    headers: list[str],
    rows: list[list[str]],
    *,
    numeric_from: int,
    totals: list[list[str]] | None = None,
) -> str:
    """Columns from ``numeric_from`` on are right-aligned figures; ``totals`` rows come last."""

    def cells(values: list[str], tag: str) -> str:
        return "".join(
            f"<{tag}{' class=number' if index >= numeric_from else ''}>{escape(value)}</{tag}>"
            for index, value in enumerate(values)
        )

    body = "".join(f"<tr>{cells(row, 'td')}</tr>" for row in rows)
    body += "".join(f'<tr class="total">{cells(row, "td")}</tr>' for row in totals or [])
    return f"<table><thead><tr>{cells(headers, 'th')}</tr></thead><tbody>{body}</tbody></table>"


def _share(part: int, whole: int) -> str:
    if whole == 0:
        return "–"
    percent = Decimal(part * 100) / Decimal(whole)
    return f"{percent.quantize(Decimal('0.1'))} %"


def _accuracy_section(accuracy: InvoiceAccuracy, chart_specs: dict[str, charts.Spec]) -> str:
    parts = [
        '<section id="invoice-accuracy">',
        "<h2>1. Invoice accuracy</h2>",
        "<p class=\"note\">Meterbook's invoices against Stripe's and the ledger's.</p>",
    ]
    if accuracy.missing_tables:
        parts.append(_missing(list(accuracy.missing_tables)))
    if accuracy.rows is not None:
        if accuracy.rows:
            rows = [
                [
                    row.currency.upper(),
                    str(row.invoices_compared),
                    str(row.invoices_matching),
                    _share(row.invoices_matching, row.invoices_compared),
                    format_money(row.total_abs_difference_minor, row.currency),
                    format_money(row.largest_difference_minor, row.currency),
                    format_money(row.revenue_at_risk_minor, row.currency),
                ]
                for row in accuracy.rows
            ]
            headers = ["Currency", "Compared", "Matching", "Matching share"]
            headers += ["Total |difference|", "Largest difference", "Revenue at risk"]
            parts.append(_table(headers, rows, numeric_from=1))
            parts.append(_chart("accuracy", charts.accuracy_chart(accuracy.rows), chart_specs))
        else:
            parts.append(f"<p>No invoices compared for this period in {ACCURACY_TABLE}.</p>")
    if accuracy.discrepancies is not None:
        parts.append(_discrepancies(accuracy))
    parts.append("</section>")
    return "\n".join(parts)


def _discrepancies(accuracy: InvoiceAccuracy) -> str:
    assert accuracy.discrepancies is not None
    if not accuracy.discrepancies:
        return (
            f'<p class="ok">No discrepancies: all {accuracy.lines_ok} reconciled lines are ok.</p>'
        )
    shown = min(accuracy.discrepancies_total, DISCREPANCIES_SHOWN)
    rows = [
        [
            row.customer_id,
            row.meter_id,
            row.status,
            row.likely_cause or "–",
            format_money(row.meterbook_amount_minor, row.currency),
            format_money(row.stripe_difference_minor, row.currency),
            format_money(row.ledger_difference_minor, row.currency),
        ]
        for row in accuracy.discrepancies
    ]
    headers = ["Customer", "Meter", "Status", "Likely cause"]
    headers += ["Meterbook amount", "Stripe − Meterbook", "Ledger − Meterbook"]
    return (
        f"<h3>Discrepancies ({accuracy.discrepancies_total}; the largest {shown} shown; "
        f"{accuracy.lines_ok} lines ok)</h3>"
        f'<p class="note">From {DISCREPANCIES_TABLE}.</p>' + _table(headers, rows, numeric_from=4)
    )


def _revenue_section(revenue: Revenue, chart_specs: dict[str, charts.Spec]) -> str:
    parts = ['<section id="revenue">', "<h2>2. Revenue by plan and model</h2>"]
    # invoice_lines sums the same priced rows: no priced usage, no invoice.
    if not revenue.by_plan_and_model:
        parts += ["<p>No usage billed in this period.</p>", "</section>"]
        return "\n".join(parts)
    rows = [
        [
            row.plan_name,
            row.model,
            row.currency.upper(),
            str(row.customers),
            format_money(row.amount_minor_exact, row.currency),
        ]
        for row in revenue.by_plan_and_model
    ]
    parts.append(
        '<p class="note">Exact rated amounts from billable_usage_daily (sub-cent digits kept); '
        "invoices round once per line.</p>"
    )
    parts.append(
        _table(["Plan", "Model", "Currency", "Customers", "Billed usage"], rows, numeric_from=3)
    )
    parts.append(
        _chart(
            "revenue-by-model",
            charts.revenue_by_model_chart(revenue.by_plan_and_model),
            chart_specs,
        )
    )
    parts.append(_chart("revenue-daily", charts.daily_revenue_chart(revenue.daily), chart_specs))
    if revenue.unpriced_days:
        parts.append(
            f'<p class="bad">{revenue.unpriced_days} customer-meter-days have usage but no price '
            "in force: not billed.</p>"
        )
    parts.append(_invoices(revenue))
    parts.append("</section>")
    return "\n".join(parts)


def _invoices(revenue: Revenue) -> str:
    rows = [
        [
            invoice.customer_id,
            invoice.currency.upper(),
            str(invoice.lines),
            format_money(invoice.amount_minor_exact, invoice.currency),
            format_money(invoice.rounding_minor, invoice.currency),
            format_money(invoice.amount_minor, invoice.currency),
        ]
        for invoice in revenue.invoices
    ]
    totals: dict[str, tuple[Decimal, Decimal, Decimal]] = {}
    for invoice in revenue.invoices:
        exact, rounding, billed = totals.get(invoice.currency, (Decimal(0),) * 3)
        totals[invoice.currency] = (
            exact + invoice.amount_minor_exact,
            rounding + invoice.rounding_minor,
            billed + invoice.amount_minor,
        )
    headers = ["Customer", "Currency", "Lines", "Exact", "Rounding", "Invoiced"]
    total_rows = [
        ["Total", currency.upper(), "", *(format_money(amount, currency) for amount in amounts)]
        for currency, amounts in sorted(totals.items())
    ]
    return "<h3>Invoice totals per customer (invoice_lines)</h3>" + _table(
        headers, rows, numeric_from=2, totals=total_rows
    )


def _lag_section(lag: list[LagDay] | None, chart_specs: dict[str, charts.Spec]) -> str:
    parts = ['<section id="metering-lag">', "<h2>3. Metering lag</h2>"]
    if lag is None:
        parts += [_missing(["metering_lag_by_day"]), "</section>"]
        return "\n".join(parts)
    if not lag:
        parts += ["<p>No metered usage in this period.</p>", "</section>"]
        return "\n".join(parts)
    parts.append(
        '<p class="note">How long usage takes to become money: occurred → received (per event), '
        "end of the usage day → first ledger posting (billed), billed → accepted by Stripe (sent). "
        "Each figure is the worst meter's p95 that day.</p>"
    )
    rows = [
        [
            day.usage_date.isoformat(),
            f"{day.events:,}",
            f"{day.slots_sent} / {day.slots}",
            _duration(day.received_lag_p95_seconds),
            _duration(day.billed_lag_p95_seconds),
            _duration(day.sent_lag_p95_seconds),
            _duration(day.billed_lag_max_seconds),
        ]
        for day in lag
    ]
    headers = ["Usage date", "Events", "Slots sent", "Received p95", "Billed p95"]
    headers += ["Sent p95", "Billed max"]
    parts.append(_table(headers, rows, numeric_from=1))
    parts.append(_chart("metering-lag", charts.lag_chart(lag), chart_specs))
    parts.append("</section>")
    return "\n".join(parts)


def _duration(seconds: float | None) -> str:
    """Seconds for a person: ``4.2 s``, ``12 min``, ``3 h 05 min``, ``2 d 4 h``."""
    if seconds is None:
        return "–"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes = round(seconds / 60)
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes:02d} min"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h"
