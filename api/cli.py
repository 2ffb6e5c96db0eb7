"""``meterbook serve`` and ``meterbook api token``: the billing API's commands (registered in
``orchestration/cli.py``)."""

from __future__ import annotations

import os
import socket
from typing import TYPE_CHECKING, Annotated

import typer

from api.auth import TOKEN_NAME_PATTERN, Role, new_token, parse_tokens, token_entry

if TYPE_CHECKING:
    from orchestration.settings import Settings

api_app = typer.Typer(help="The billing API's tokens.", no_args_is_help=True)


def serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port (0: any free port).")] = 8000,
) -> None:
    """Serve the billing API (OpenAPI at /docs); tokens from METERBOOK_API_TOKENS."""
    # Checked before anything slow is imported: a misconfigured server fails at once.
    try:
        principals = parse_tokens(os.environ.get("METERBOOK_API_TOKENS", ""))
    except ValueError as error:
        typer.echo(str(error), err=True)
        raise typer.Exit(2) from None
    if not principals:
        typer.echo(
            "Set METERBOOK_API_TOKENS (name:role:sha256 entries); make a token with "
            "`meterbook api token --name NAME --role viewer`. Without tokens nobody could call "
            "the API.",
            err=True,
        )
        raise typer.Exit(2)
    import uvicorn

    from api.app import create_app
    from api.config import config_from_env
    from orchestration.settings import get_settings

    settings = get_settings()
    try:
        config = config_from_env(settings, _ledger_url(settings))
    except ValueError as error:
        typer.echo(str(error), err=True)
        raise typer.Exit(2) from None
    listener = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((host, port))
    bound = listener.getsockname()[1]
    typer.echo(f"Meterbook API on http://{host}:{bound} (OpenAPI: http://{host}:{bound}/docs)")
    server = uvicorn.Server(uvicorn.Config(create_app(config), log_level="info"))
    server.run(sockets=[listener])


def _ledger_url(settings: Settings) -> str:
    """As the pipeline resolves it (``METERBOOK_LEDGER_URL``, else the embedded server), without
    importing Dagster, which takes seconds."""
    from ledger.embedded import embedded_ledger_url

    url = os.environ.get("METERBOOK_LEDGER_URL")
    if url:
        return url
    settings.ledger_data_dir.parent.mkdir(parents=True, exist_ok=True)
    return embedded_ledger_url(settings.ledger_data_dir)


@api_app.command("token")
def token(
    name: Annotated[str, typer.Option(help="Who holds it (recorded in the audit log).")],
    role: Annotated[Role, typer.Option(help="viewer, support or finance.")] = Role.VIEWER,
) -> None:
    """Make a new token: prints the token (give it to its holder) and its METERBOOK_API_TOKENS
    entry (configure the server with it; it holds only the token's hash)."""
    if not TOKEN_NAME_PATTERN.match(name):
        raise typer.BadParameter("--name must be 1-64 letters, digits or _.@- characters.")
    secret = new_token()
    typer.echo(f"token: {secret}")
    typer.echo(f"METERBOOK_API_TOKENS entry: {token_entry(name, role, secret)}")


@api_app.command("publish")
def publish() -> None:
    """Publish the warehouse snapshot the API reads. Run it when no pipeline run is writing
    (it opens the warehouse for the copy); a run's own last step is the better place."""
    import duckdb

    from api.snapshot import publish_snapshot
    from orchestration.settings import get_settings

    settings = get_settings()
    with duckdb.connect(str(settings.warehouse_path)) as conn:
        published = publish_snapshot(conn, settings.api_snapshot_dir)
    typer.echo(
        f"Published {published.path} at {published.published_at.isoformat()}: "
        + ", ".join(f"{name} {rows:,}" for name, rows in published.rows.items())
        + (
            f"; not in the warehouse yet: {', '.join(published.missing)}"
            if published.missing
            else ""
        )
    )
