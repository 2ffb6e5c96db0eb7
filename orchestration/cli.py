"""The ``meterbook`` command: generate sample data, run and backfill days, verify the ledger."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
import warnings
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Annotated

import typer

from api.cli import api_app, serve
from api.support_cli import adjust, anomalies, credits_app, customer_app, explain
from orchestration.settings import LOCAL_STRIPE_PORT, Settings, get_settings

# Dagster flags the beta/preview features we rely on (single-run backfills, partitioned
# checks) at every load; GX draws progress bars. Neither belongs in the CLI's output.
warnings.filterwarnings("ignore", message=".*(is currently in beta|is currently in preview).*")
os.environ.setdefault("TQDM_DISABLE", "1")

app = typer.Typer(
    help="Meterbook: raw usage events to an exact ledger and Stripe Billing Meters.",
    no_args_is_help=True,
    add_completion=False,
)
ledger_app = typer.Typer(help="Inspect the ledger.", no_args_is_help=True)
app.add_typer(ledger_app, name="ledger")
stripe_app = typer.Typer(help="Inspect what was sent to Stripe.", no_args_is_help=True)
app.add_typer(stripe_app, name="stripe")
app.add_typer(api_app, name="api")  # the billing API: api/cli.py
app.command("serve")(serve)
app.command("explain")(explain)
app.add_typer(customer_app, name="customer")  # support tasks: api/support_cli.py
app.add_typer(credits_app, name="credits")
app.command("adjust")(adjust)
app.command("anomalies")(anomalies)

DEMO_CUSTOMERS = 25
DEMO_EVENTS_PER_DAY = 20_000
DEMO_DAYS = 30
DEMO_SEED = 7
# A Dagster run per week of the demo month: the progress bar moves, and dbt runs only 5 times.
DEMO_CHUNK_DAYS = 7


def _yesterday() -> date:
    return datetime.now(UTC).date() - timedelta(days=1)


def _parse_day(value: str, option: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(
            f"{option} must be a date like 2026-10-01, not {value!r}."
        ) from None


@app.command()
def generate(
    days: Annotated[int, typer.Option(help="Number of days of usage.")] = DEMO_DAYS,
    customers: Annotated[int, typer.Option(help="Number of customers.")] = DEMO_CUSTOMERS,
    events_per_day: Annotated[int, typer.Option(help="Events per day.")] = DEMO_EVENTS_PER_DAY,
    seed: Annotated[int, typer.Option(help="Random seed; same seed, same files.")] = DEMO_SEED,
    end_date: Annotated[
        str | None, typer.Option(help="Last day (default: yesterday, UTC).")
    ] = None,
) -> None:
    """Write deterministic sample usage logs and Stripe exports under the data directory."""
    from ingestion.sample_data import generate_sample_data

    settings = get_settings()
    last_day = _parse_day(end_date, "--end-date") if end_date else _yesterday()
    start = last_day - timedelta(days=days - 1)
    started = time.monotonic()
    summary = generate_sample_data(
        settings.data_dir,
        raw_dir=settings.raw_dir,
        start_date=start,
        days=days,
        customers=customers,
        events_per_day=events_per_day,
        seed=seed,
        price_book_dir=settings.price_book_dir,
    )
    typer.echo(
        f"Generated {days} days ({start} to {last_day}) for {customers} customers under "
        f"{settings.data_dir / 'raw'} in {time.monotonic() - started:.1f} s."
    )
    del summary


@app.command()
def run(date_: Annotated[str, typer.Option("--date", help="Arrival day to run.")]) -> None:
    """Materialise one daily partition through Dagster."""
    day = _parse_day(date_, "--date")
    _run_range(get_settings(), day, day, chunk_days=1)


@app.command()
def backfill(
    start: Annotated[str, typer.Option(help="First arrival day (inclusive).")],
    end: Annotated[str, typer.Option(help="Last arrival day (inclusive).")],
    chunk_days: Annotated[
        int, typer.Option(help="Days per Dagster run (dbt runs once per run).")
    ] = 31,
) -> None:
    """Materialise a range of daily partitions through Dagster, chunk by chunk."""
    _run_range(get_settings(), _parse_day(start, "--start"), _parse_day(end, "--end"), chunk_days)


@app.command()
def demo(
    days: Annotated[int, typer.Option(help="Days in the sample period.")] = DEMO_DAYS,
    customers: Annotated[int, typer.Option(help="Customers.")] = DEMO_CUSTOMERS,
    events_per_day: Annotated[int, typer.Option(help="Events per day.")] = DEMO_EVENTS_PER_DAY,
    end_date: Annotated[
        str | None, typer.Option(help="Last day (default: yesterday, UTC).")
    ] = None,
    serve_api: Annotated[
        bool,
        typer.Option(
            "--serve-api",
            help="Then serve the billing API on 127.0.0.1 with new demo tokens (Ctrl-C stops).",
        ),
    ] = False,
    api_port: Annotated[int, typer.Option(help="The billing API's port (--serve-api).")] = 8000,
) -> None:
    """Generate a sample month, start the local Stripe, bill every day, print a summary."""
    from stripe_local.server import LocalStripeServer

    settings = get_settings()
    last_day = _parse_day(end_date, "--end-date") if end_date else _yesterday()
    first_day = last_day - timedelta(days=days - 1)
    parameters = {
        "start_date": first_day.isoformat(),
        "days": days,
        "customers": customers,
        "events_per_day": events_per_day,
        "seed": DEMO_SEED,
    }
    _prepare_demo_data(settings, parameters)
    if not settings.uses_local_stripe:
        raise typer.BadParameter(
            "The demo sends usage to the local Stripe; unset METERBOOK_STRIPE_API_BASE."
        )
    from orchestration.demo_credits import grant_demo_credits
    from orchestration.resources import ledger_url_outside_dagster

    grants = grant_demo_credits(settings, ledger_url_outside_dagster(settings), first_day)
    typer.echo(f"Credit grants in force for the demo: {grants} (docs/pricing.md, Credits).")
    port = int(settings.stripe_api_base.rsplit(":", 1)[1])
    with LocalStripeServer(
        port=port,
        db_path=settings.stripe_local_db,
        seed_customers_csv=settings.raw_stripe_dir / "customers.csv",
    ):
        started = time.monotonic()
        _run_range(settings, first_day, last_day, chunk_days=DEMO_CHUNK_DAYS)
        elapsed = time.monotonic() - started
        stripe_events = _local_stripe_meter_events(settings.stripe_api_base)
    _print_summary(settings, stripe_events=stripe_events)
    typer.echo(f"Billed {days} days in {elapsed:.0f} s.")
    typer.echo(
        "See the runs and assets in the Dagster UI: uv run meterbook ui "
        "(then open http://127.0.0.1:3000)."
    )
    if serve_api:
        _serve_demo_api(api_port)


def _serve_demo_api(port: int) -> None:
    """The billing API over the demo's data, with a new viewer and support token (this process
    only: they are printed once and never stored)."""
    from api.auth import Role, new_token, token_entry

    tokens = {Role.VIEWER: new_token(), Role.SUPPORT: new_token()}
    entries = [token_entry(f"demo-{role.value}", role, secret) for role, secret in tokens.items()]
    configured = os.environ.get("METERBOOK_API_TOKENS", "").strip()
    os.environ["METERBOOK_API_TOKENS"] = ",".join([configured, *entries] if configured else entries)
    typer.echo("")
    typer.echo(f"Billing API tokens for this session: viewer {tokens[Role.VIEWER]}")
    typer.echo(f"                                     support {tokens[Role.SUPPORT]}")
    typer.echo(
        f"  e.g. curl -H 'Authorization: Bearer {tokens[Role.VIEWER]}' "
        f"http://127.0.0.1:{port}/anomalies"
    )
    serve(host="127.0.0.1", port=port)


@app.command()
def summary() -> None:
    """Print the figures of what has been billed so far."""
    settings = get_settings()
    _print_summary(settings, stripe_events=None)


@app.command()
def report(
    period: Annotated[
        str,
        typer.Option(
            "--period",
            help="A month (UTC), e.g. 2026-10: the billing periods that begin in it.",
        ),
    ],
    output: Annotated[
        Path | None,
        typer.Option(help="HTML file to write (default: data/reports/finance-YYYY-MM.html)."),
    ] = None,
) -> None:
    """Write the finance report of one billing period as a self-contained HTML file."""
    from reporting.finance_report import BillingPeriod, WarehouseError, load_finance_report
    from reporting.html import write_report

    try:
        billing_period = BillingPeriod.parse(period)
    except ValueError as error:
        raise typer.BadParameter(str(error), param_hint="--period") from None
    settings = get_settings()
    target = output or settings.data_dir / "reports" / f"finance-{billing_period.label}.html"
    try:
        finance_report = load_finance_report(settings.warehouse_path, billing_period)
    except WarehouseError as error:
        typer.echo(f"Cannot write the report: {error}.", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"Wrote {write_report(finance_report, target)}")


@app.command()
def ui(port: Annotated[int, typer.Option(help="Port of the Dagster UI.")] = 3000) -> None:
    """Open the Dagster UI on this project's instance (the runs the CLI launched included)."""
    from orchestration.runner import prepare_instance

    prepare_instance(get_settings())
    os.execvp(
        sys.executable,
        [sys.executable, "-m", "dagster", "dev", "-h", "127.0.0.1", "-p", str(port)],
    )


@stripe_app.command("outbox")
def stripe_outbox(
    limit: Annotated[int, typer.Option(help="Problem writes to list at most.")] = 50,
) -> None:
    """The Stripe outbox: writes per state, and the dead letters and failing pending writes
    with Stripe's last error. Exit 1 when there are dead letters."""
    import psycopg

    from stripe_sync import outbox

    with psycopg.connect(_ledger_url(), autocommit=True) as conn:
        outbox.ensure_schema(conn)
        counts = outbox.state_counts(conn)
        problems = outbox.problem_writes(conn, limit)
    typer.echo(
        "outbox: " + ", ".join(f"{s} {counts.get(s, 0):,}" for s in ("sent", "pending", "dead"))
    )
    for write in problems:
        typer.echo(
            f"  {write.state:<7} {write.operation} {write.slot_id} r{write.revision} "
            f"after {write.attempts} attempts: {write.last_error or '(no error recorded)'}"
        )
    if counts.get("dead"):
        typer.echo(
            "Dead letters were refused by Stripe and will not be retried: fix the cause (the "
            "error says what), then record a new revision.",
            err=True,
        )
        raise typer.Exit(1)


@stripe_app.command("pull-catalog")
def stripe_pull_catalog() -> None:
    """List customers, products, prices, subscriptions and their items from the configured
    Stripe (every page) into data/raw/stripe/*.csv, as a Stripe export would write them."""
    from orchestration.resources import build_resources
    from stripe_sync.catalog import pull_catalog

    settings = get_settings()
    stripe_resource = build_resources(settings)["stripe"]
    key = os.environ.get("STRIPE_API_KEY")
    if key:  # outside Dagster the resource's EnvVar is not resolved: read the variable here
        stripe_resource = stripe_resource.model_copy(update={"api_key": key})  # type: ignore[attr-defined]
    counts = pull_catalog(stripe_resource.client(), settings.raw_stripe_dir)  # type: ignore[attr-defined]
    typer.echo(
        f"Pulled into {settings.raw_stripe_dir}: "
        + ", ".join(f"{table} {count:,}" for table, count in counts.items())
    )


@stripe_app.command("webhooks")
def stripe_webhooks(
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1 to receive on.")] = 8787,
    reprocess: Annotated[
        bool, typer.Option("--reprocess", help="Process stored events again, then exit.")
    ] = False,
) -> None:
    """Receive Stripe webhooks at /stripe/webhooks (signing secret: STRIPE_WEBHOOK_SECRET),
    or re-process the stored events that failed."""
    from ledger import Ledger
    from stripe_sync import webhooks

    url = _ledger_url()
    if reprocess:
        import psycopg

        with psycopg.connect(url, autocommit=True) as conn, Ledger.connect(url) as book:
            webhooks.ensure_schema(conn)
            objects, failed = webhooks.process_stored_events(conn, book)
        typer.echo(f"re-processed the events of {objects} objects; {failed} failed")
        raise typer.Exit(1 if failed else 0)
    secret = os.environ.get("STRIPE_WEBHOOK_SECRET")
    if not secret:
        typer.echo(
            "Set STRIPE_WEBHOOK_SECRET to the endpoint's signing secret (whsec_...): every "
            "event's signature is checked against it.",
            err=True,
        )
        raise typer.Exit(2)
    import uvicorn

    uvicorn.run(webhooks.create_webhook_app(url, secret), host="127.0.0.1", port=port)


@app.command("stripe-server")
def stripe_server(
    port: Annotated[int, typer.Option(help="Port on 127.0.0.1.")] = LOCAL_STRIPE_PORT,
) -> None:
    """Run the local Stripe-compatible server in the foreground (for `dagster dev`)."""
    settings = get_settings()
    command = [
        sys.executable,
        "-m",
        "stripe_local",
        "--port",
        str(port),
        "--db",
        str(settings.stripe_local_db),
    ]
    customers_csv = settings.raw_stripe_dir / "customers.csv"
    if customers_csv.exists():
        command += ["--seed-customers", str(customers_csv)]
    raise typer.Exit(subprocess.call(command))


@ledger_app.command("verify")
def ledger_verify(
    recompute: Annotated[
        bool, typer.Option("--recompute", help="Also recompute each transaction's hash.")
    ] = False,
) -> None:
    """Check every invariant of the ledger; exit 1 if any is violated."""
    from ledger import Ledger

    with Ledger.connect(_ledger_url()) as book:
        report = book.verify(recompute_hashes=recompute)
    typer.echo(f"transactions: {report.transactions}")
    typer.echo(f"entries: {report.entries}")
    typer.echo(f"content hash: {report.content_hash}")
    problems = report.problems()
    for problem in problems:
        typer.echo(f"VIOLATED: {problem}", err=True)
    typer.echo("invariants: " + ("all hold" if not problems else f"{len(problems)} violated"))
    if problems:
        raise typer.Exit(1)


@ledger_app.command("balances")
def ledger_balances(
    customer: Annotated[str | None, typer.Option(help="Only this customer's accounts.")] = None,
    as_of: Annotated[
        datetime | None,
        typer.Option("--as-of", help="Business time: transactions effective at or before it."),
    ] = None,
    known_at: Annotated[
        datetime | None,
        typer.Option("--known-at", help="System time: transactions posted at or before it."),
    ] = None,
) -> None:
    """Balances per account (debits positive), exact, as of a business and/or system time."""
    from ledger import Ledger

    prefix = f"customer:{customer}:" if customer else ""
    with Ledger.connect(_ledger_url()) as book:
        balances = book.balances(account_prefix=prefix, as_of=_utc(as_of), known_at=_utc(known_at))
    if not balances:
        typer.echo(f"No entries{f' for customer {customer}' if customer else ''}.")
        return
    width = max(len(account) for account, _ in balances)
    for (account, currency), amount in balances.items():
        typer.echo(f"{account:<{width}}  {amount:>20} {currency} (minor units)")


def _ledger_url() -> str:
    from orchestration.resources import ledger_url_outside_dagster

    return ledger_url_outside_dagster()


def _utc(moment: datetime | None) -> datetime | None:
    """A time given without a zone is read as UTC, like every time in the ledger."""
    if moment is None or moment.tzinfo is not None:
        return moment
    return moment.replace(tzinfo=UTC)


def _run_range(settings: Settings, first_day: date, last_day: date, chunk_days: int) -> None:
    from orchestration.runner import RunOutcome, day_chunks, run_days

    total_days = sum(
        (end - start).days + 1 for start, end in day_chunks(first_day, last_day, chunk_days)
    )
    log_path = settings.data_dir / "logs" / "runs.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    terminal = sys.stdout
    typer.echo(f"Billing {first_day}..{last_day} through Dagster (step logs: {log_path})")
    with (
        typer.progressbar(
            length=total_days, label="Billing days", file=terminal, show_pos=True
        ) as progress,
        log_path.open("a") as log,
        contextlib.redirect_stdout(log),
        contextlib.redirect_stderr(log),
    ):

        def advance(outcome: RunOutcome) -> None:
            progress.update((outcome.last_day - outcome.first_day).days + 1)
            state = "ok" if outcome.success else "FAILED"
            progress.label = f"{outcome.first_day}..{outcome.last_day} {state}"

        outcomes = run_days(
            settings,
            first_day,
            last_day,
            chunk_days=chunk_days,
            on_chunk_done=advance,
            log_level="INFO",
        )
    for outcome in outcomes:
        # A reconciliation run follows only a billing run that succeeded.
        billed = outcome.success or outcome.reconciliation_run_id is not None
        state = "succeeded" if billed else "FAILED"
        typer.echo(f"run {outcome.run_id}: {outcome.first_day}..{outcome.last_day} {state}")
        if outcome.reconciliation_run_id:
            state = "succeeded" if outcome.success else "FAILED"
            typer.echo(
                f"run {outcome.reconciliation_run_id}: {first_day}..{last_day} "
                f"reconciled with Stripe, {state}"
            )
    if not all(o.success for o in outcomes):
        typer.echo(
            "A run failed: open the Dagster UI (uv run meterbook ui) for the failed step and "
            "its logs, fix the cause, then re-run the same days; nothing is billed twice.",
            err=True,
        )
        raise typer.Exit(1)


def _prepare_demo_data(settings: Settings, parameters: dict[str, object]) -> None:
    """Generate the sample data, or reuse it when it was made with the same parameters.

    When the parameters changed (a new day moves the month), the demo's own state is reset
    (raw files, warehouse, ledger, local Stripe); the Dagster run history is kept.
    """
    from ingestion.sample_data import generate_sample_data

    marker = settings.data_dir / "demo.json"
    if marker.exists() and json.loads(marker.read_text()) == parameters:
        typer.echo(f"Reusing the sample data under {settings.data_dir / 'raw'}.")
        return
    if marker.exists():
        typer.echo("The demo period changed: resetting the demo's raw data, warehouse and ledger.")
        for path in (settings.raw_dir, settings.ledger_data_dir):
            shutil.rmtree(path, ignore_errors=True)
        for path in (settings.warehouse_path, settings.stripe_local_db):
            path.unlink(missing_ok=True)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    generate_sample_data(
        settings.data_dir,
        raw_dir=settings.raw_dir,
        start_date=date.fromisoformat(str(parameters["start_date"])),
        days=int(parameters["days"]),  # type: ignore[call-overload]
        customers=int(parameters["customers"]),  # type: ignore[call-overload]
        events_per_day=int(parameters["events_per_day"]),  # type: ignore[call-overload]
        seed=int(parameters["seed"]),  # type: ignore[call-overload]
        price_book_dir=settings.price_book_dir,
    )
    marker.write_text(json.dumps(parameters, indent=2))
    typer.echo(
        f"Generated {parameters['days']} days of sample data from {parameters['start_date']} "
        f"in {time.monotonic() - started:.1f} s."
    )


def _local_stripe_meter_events(api_base: str) -> int | None:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(f"{api_base}/_local/stats", timeout=5) as response:
            stats = json.loads(response.read())
    except (urllib.error.URLError, OSError, ValueError):
        return None
    return int(stats.get("meter_events", 0))


def _print_summary(settings: Settings, *, stripe_events: int | None) -> None:
    from orchestration.resources import ledger_url_outside_dagster
    from orchestration.summary import collect_summary, format_minor

    ledger_url = ledger_url_outside_dagster(settings)
    figures = collect_summary(str(settings.warehouse_path), ledger_url)
    typer.echo("")
    typer.echo("Meterbook summary")
    typer.echo(f"  events in (raw lines):  {figures.raw_lines:,}")
    typer.echo(f"  accepted:               {figures.accepted_lines:,}")
    typer.echo(f"  duplicates:             {figures.duplicate_lines:,}")
    typer.echo(f"  quarantined:            {figures.quarantined_lines:,}")
    for reason, count in figures.quarantine_reasons.items():
        typer.echo(f"      {reason}: {count:,}")
    conserved = "yes" if figures.lines_conserved else "NO"
    typer.echo(f"  every line accounted:   {conserved}")
    typer.echo("  billed per customer (invoice lines, rounded once):")
    for bill in figures.bills:
        typer.echo(f"      {bill.customer_id}  {format_minor(bill.amount_minor, bill.currency)}")
    typer.echo("  usage by charge model (exact, before rounding):")
    for charge in figures.charge_models:
        name = charge.charge_model + (" with an allowance" if charge.with_allowance else "")
        negative = (
            f" ({charge.negative_days} day(s) lowered by a cheaper volume tier)"
            if charge.negative_days
            else ""
        )
        typer.echo(
            f"      {name:<26} {charge.customers:>3} customers  "
            f"{format_minor(charge.amount_minor, charge.currency):>16}{negative}"
        )
    typer.echo("  usage by meter aggregation (period quantities, exact amounts):")
    for metric in figures.meter_aggregations:
        name = metric.aggregation + (" with a property filter" if metric.filtered else "")
        amount = format_minor(metric.amount_minor, metric.currency)
        typer.echo(
            f"      {name:<26} {metric.meters:>3} meter(s) {metric.customers:>3} customers  "
            f"{metric.quantity_units:>16,} units {amount:>16}"
        )
    cycles = figures.billing_anchor_days
    anchored = ", ".join(f"{n} on day {day}" for day, n in cycles.items() if day != 1)
    typer.echo(
        f"  billing cycles:         {cycles.get(1, 0)} customer(s) on calendar months"
        + (f", anchored: {anchored}" if anchored else "")
    )
    for minimum in figures.minimum_spend:
        typer.echo(
            f"  minimum spend {minimum.period}:  {minimum.topped_up} of {minimum.customers} "
            f"customer(s) topped up, {format_minor(minimum.top_up_minor, minimum.currency)}"
        )
    for change in figures.plan_changes:
        typer.echo(
            f"  plan change:            {change.customer_id} {change.from_plan} -> "
            f"{change.to_plan} at {change.changed_at} UTC, flat-fee proration "
            f"{format_minor(change.proration_minor, change.currency)}"
        )
    states = figures.entitlement_states
    typer.echo(
        "  spend caps (last day):  "
        + ", ".join(f"{state} {states.get(state, 0):,}" for state in ("ok", "warning", "capped"))
    )
    typer.echo(f"  spend caps reached:     {len(figures.capped_customers):,} customer-period(s)")
    for capped in figures.capped_customers:
        typer.echo(
            f"      {capped.customer_id}  capped from {capped.capped_from} in the period "
            f"from {capped.period_start}"
            + (" (still capped on the last day)" if capped.capped_last_day else "")
        )
    for credit in figures.credits:
        typer.echo(
            f"  credit grants:          {credit.grants:,}: "
            f"granted {format_minor(credit.granted_minor, credit.currency)}, "
            f"applied to usage {format_minor(credit.applied_minor, credit.currency)}, "
            f"expired unused {format_minor(credit.expired_minor, credit.currency)}, "
            f"left {format_minor(credit.left_minor, credit.currency)}"
        )
    typer.echo(f"  ledger transactions:    {figures.ledger_transactions:,}")
    typer.echo(f"  ledger balanced:        {'yes' if figures.ledger_balanced else 'NO'}")
    typer.echo(f"  ledger content hash:    {figures.ledger_content_hash}")
    typer.echo(f"  outbox:                 {figures.outbox_states}")
    if stripe_events is not None:
        typer.echo(f"  meter events on Stripe: {stripe_events:,}")
