"""Vega-Lite specs (built with Altair) for the finance report's charts.

Each function returns a plain spec dict with its data inline, so the page needs no data files.
Money becomes a float here and only here, as the plotted value; tables show the exact amounts.
"""

from __future__ import annotations

from typing import Any

import altair as alt

from reporting.finance_report import AccuracyRow, DailyRevenue, LagDay, PlanModelRevenue
from reporting.money import plotted

Spec = dict[str, Any]
WIDTH = 560
HEIGHT = 220
SECONDS_PER_HOUR = 3600


# Horizontal bars get a fixed band each, so one currency or two models make a short chart.
BAR_STEP = alt.Step(28)


def _spec(chart: alt.Chart, title: str, *, height: int | alt.Step = HEIGHT) -> Spec:
    return chart.properties(width=WIDTH, height=height, title=title).to_dict()


def _amount_title(currencies: set[str]) -> str:
    """Name the currency when there is one; several share an axis in their major units."""
    unit = next(iter(currencies)).upper() if len(currencies) == 1 else "major units"
    return f"Billed usage ({unit})"


def accuracy_chart(rows: list[AccuracyRow]) -> Spec:
    """Matching vs differing invoices per currency: the share finance signs off on."""
    values = []
    for row in rows:
        differing = row.invoices_compared - row.invoices_matching
        for outcome, count in (("matching", row.invoices_matching), ("differing", differing)):
            values.append({"currency": row.currency.upper(), "outcome": outcome, "invoices": count})
    chart = (
        alt.Chart(alt.Data(values=values))
        .mark_bar()
        .encode(
            y=alt.Y("currency:N", title="Currency"),
            x=alt.X(
                "invoices:Q",
                title="Invoices compared",
                stack="zero",
                axis=alt.Axis(tickMinStep=1, format="d"),
            ),
            color=alt.Color(
                "outcome:N",
                title="Invoice",
                scale=alt.Scale(domain=["matching", "differing"], range=["#4c9a5b", "#d1603d"]),
            ),
            tooltip=["currency:N", "outcome:N", "invoices:Q"],
        )
    )
    return _spec(chart, "Invoices matching Stripe and the ledger", height=BAR_STEP)


def revenue_by_model_chart(rows: list[PlanModelRevenue]) -> Spec:
    """Billed usage per model, stacked by the plan it was rated on."""
    values = [
        {
            "model": f"{row.model} ({row.currency.upper()})",
            "plan": row.plan_name,
            "amount": plotted(row.amount_minor_exact, row.currency),
        }
        for row in rows
    ]
    chart = (
        alt.Chart(alt.Data(values=values))
        .mark_bar()
        .encode(
            y=alt.Y("model:N", title="Model", sort="-x"),
            x=alt.X(
                "sum(amount):Q",
                title=_amount_title({row.currency for row in rows}),
                axis=alt.Axis(format=",.0f", tickCount=6),
            ),
            color=alt.Color("plan:N", title="Plan"),
            tooltip=["model:N", "plan:N", alt.Tooltip("amount:Q", format=",.2f")],
        )
    )
    return _spec(chart, "Billed usage by model and plan", height=BAR_STEP)


def daily_revenue_chart(rows: list[DailyRevenue]) -> Spec:
    """Billed usage per usage day, by model: shows a quiet day or a spike at a glance."""
    values = [
        {
            "usage_date": row.usage_date.isoformat(),
            "model": f"{row.model} ({row.currency.upper()})",
            "amount": plotted(row.amount_minor_exact, row.currency),
        }
        for row in rows
    ]
    chart = (
        alt.Chart(alt.Data(values=values))
        .mark_bar()
        .encode(
            x=alt.X("usage_date:O", title="Usage date (UTC)"),
            y=alt.Y(
                "sum(amount):Q",
                title=_amount_title({row.currency for row in rows}),
                axis=alt.Axis(format=",.0f", tickCount=6),
            ),
            color=alt.Color("model:N", title="Model"),
            tooltip=["usage_date:O", "model:N", alt.Tooltip("amount:Q", format=",.2f")],
        )
    )
    return _spec(chart, "Billed usage per day")


def lag_chart(days: list[LagDay]) -> Spec:
    """p95 of each stage per usage date on a log scale: seconds and days share one axis.

    A zero lag has no place on a log scale and is left out of the chart (the table shows it).
    """
    stages = (
        ("occurred → received", "received_lag_p95_seconds"),
        ("day end → billed", "billed_lag_p95_seconds"),
        ("billed → sent to Stripe", "sent_lag_p95_seconds"),
    )
    values = [
        {
            "usage_date": day.usage_date.isoformat(),
            "stage": stage,
            "hours": seconds / SECONDS_PER_HOUR,
        }
        for day in days
        for stage, field in stages
        if (seconds := getattr(day, field)) is not None and seconds > 0
    ]
    chart = (
        alt.Chart(alt.Data(values=values))
        .mark_line(point=True)
        .encode(
            x=alt.X("usage_date:O", title="Usage date (UTC)"),
            y=alt.Y("hours:Q", title="p95 lag, hours (worst meter)", scale=alt.Scale(type="log")),
            color=alt.Color("stage:N", title="Stage", sort=[name for name, _ in stages]),
            tooltip=["usage_date:O", "stage:N", alt.Tooltip("hours:Q", format=",.2f")],
        )
    )
    return _spec(chart, "Metering lag per stage (log scale)")
