"""The dbt project as Dagster assets, partitioned like the rest of the pipeline.

The partition window reaches dbt as two environment variables (``METERBOOK_ARRIVAL_FROM``
inclusive, ``METERBOOK_ARRIVAL_UNTIL`` exclusive); incremental models rebuild only the usage dates
those arrival days touched. Each dbt step keeps its target directory next to the warehouse it
builds, so the next run of the same step parses only what changed (dbt's partial parsing needs the
same profile and ``--vars`` as the parse it reuses, which a new directory per run never had).
dbt tests become Dagster asset checks; a failing test stops dbt's downstream models and the
billing assets.
"""

import fcntl
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import dagster as dg
from dagster_dbt import (
    DagsterDbtTranslator,
    DagsterDbtTranslatorSettings,
    DbtCliResource,
    dbt_assets,
)

from crash_points import crash_point
from orchestration.assets.ingestion import WAREHOUSE_POOL
from orchestration.partitions import daily_partitions
from orchestration.resources import WarehouseResource, dbt_project
from orchestration.settings import DBT_PROJECT_DIR, price_book_dir


def ensure_manifest() -> None:
    """Parse the dbt project when its manifest is missing, older than its files, or parsed
    with another price book directory.

    ``dagster dev`` prepares the manifest itself; the CLI, the tests and CI come through here.
    Processes that load the definitions at the same moment (parallel test workers, a run next
    to ``dagster definitions validate``) take turns: one parses, the others find it fresh.
    """
    manifest = dbt_project.manifest_path
    manifest.parent.mkdir(parents=True, exist_ok=True)
    with (manifest.parent / "parse.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, or the process dies
        if not _manifest_is_fresh(manifest):
            _parse_project(manifest)


def _manifest_is_fresh(manifest: Path) -> bool:
    prices = price_book_dir()
    parsed_with = manifest.parent / "price_book_dir.txt"  # which price book the manifest has
    folders = [DBT_PROJECT_DIR / name for name in ("models", "macros", "tests")] + [prices]
    project_files = [path for folder in folders for path in folder.rglob("*") if path.is_file()] + [
        DBT_PROJECT_DIR / "dbt_project.yml",
        DBT_PROJECT_DIR / "profiles.yml",
    ]
    newest = max(path.stat().st_mtime for path in project_files)
    return (
        manifest.exists()
        and manifest.stat().st_mtime >= newest
        and parsed_with.exists()
        and parsed_with.read_text() == str(prices)
    )


def _parse_project(manifest: Path) -> None:
    dbt_executable = Path(sys.executable).parent / "dbt"
    completed = subprocess.run(
        [
            str(dbt_executable),
            "parse",
            "--quiet",
            "--project-dir",
            str(DBT_PROJECT_DIR),
            "--profiles-dir",
            str(DBT_PROJECT_DIR),
            "--target-path",
            str(manifest.parent),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if completed.returncode != 0:
        raise RuntimeError(
            f"`dbt parse` failed for {DBT_PROJECT_DIR}; fix the dbt project:\n"
            f"{completed.stdout}\n{completed.stderr}"
        )
    (manifest.parent / "price_book_dir.txt").write_text(str(price_book_dir()))


ensure_manifest()


class MeterbookDbtTranslator(DagsterDbtTranslator):
    """Groups dbt assets by layer (staging, intermediate, marts, price_book)."""

    def get_group_name(self, dbt_resource_props: Mapping[str, Any]) -> str | None:
        if dbt_resource_props["resource_type"] == "seed":
            return "price_book"
        fqn = dbt_resource_props.get("fqn", [])
        return fqn[1] if len(fqn) > 2 else "dbt"


FINANCE_SELECTION = "tag:finance"
# The models that compare Stripe's meter counts with Meterbook's: they run in the
# reconciliation job, after Stripe's counts are read back (orchestration/jobs.py says why).
RECONCILIATION_SELECTION = "tag:stripe_reconciliation"


def dbt_target_path(warehouse: WarehouseResource, step_name: str) -> Path:
    """Where one dbt step writes its artifacts and logs: beside the warehouse, one per step.

    Runs of one warehouse are serialised (one run at a time), so a step's directory is never
    shared by two dbt processes; a run killed mid-parse leaves a partial parse file that dbt
    rejects and replaces with a full parse.
    """
    return Path(warehouse.path).resolve().parent / "dbt_target" / step_name


PARTIAL_PARSE_FILE = "partial_parse.msgpack"


def seed_partial_parse(target: Path) -> None:
    """Give a step that never ran on this warehouse the parse another step left beside it.

    Every step parses the same project with the same profile and environment, so the first run
    on a new warehouse need not parse in full three times (~6 s each). Copied under a temporary
    name and renamed, so dbt never reads half a file; a parse dbt finds stale it redoes in full.
    """
    if (target / PARTIAL_PARSE_FILE).exists():
        return
    parsed = sorted(
        target.parent.glob(f"*/{PARTIAL_PARSE_FILE}"), key=lambda path: path.stat().st_mtime
    )
    if not parsed:
        return
    target.mkdir(parents=True, exist_ok=True)
    copying = target / f".{PARTIAL_PARSE_FILE}.copying"
    shutil.copyfile(parsed[-1], copying)
    os.replace(copying, target / PARTIAL_PARSE_FILE)


def _build(
    context: dg.AssetExecutionContext, dbt: DbtCliResource, warehouse: WarehouseResource
) -> Iterator[Any]:
    window = context.partition_time_window
    # dbt's profile reads METERBOOK_WAREHOUSE_PATH, so both always point at one warehouse file,
    # and macros/partitions.sql reads the window. The dbt process inherits them when it starts;
    # they are put back afterwards, so that this process (a test, a harness billing another
    # data directory) never keeps this warehouse or window by accident.
    dbt_environment = {
        "METERBOOK_WAREHOUSE_PATH": warehouse.path,
        "METERBOOK_ARRIVAL_FROM": window.start.date().isoformat(),
        "METERBOOK_ARRIVAL_UNTIL": window.end.date().isoformat(),
    }
    previous = {name: os.environ.get(name) for name in dbt_environment}
    os.environ.update(dbt_environment)
    try:
        # dbt's unit tests check the models' logic on fixed inputs, not the day's data: they
        # run with the test suite (tests/pipeline/test_end_to_end.py, tests/rating), not in
        # every billing run, where they cost ~1 s each (dbt's advice for production builds).
        target = dbt_target_path(warehouse, context.op_def.name)
        seed_partial_parse(target)
        invocation = dbt.cli(
            ["build", "--exclude-resource-type", "unit_test"],
            context=context,
            target_path=target,
        )
    finally:
        for name, value in previous.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    for event in invocation.stream():
        # While dbt still runs: the whole process group (dbt too), or the Dagster process alone.
        crash_point(f"dbt.{context.op_def.name}", process_group=True)
        crash_point(f"dbt.{context.op_def.name}.dagster_process_only")
        yield event


def _pipeline_dbt_assets(**selection: str) -> Callable[..., Any]:
    """``dbt_assets`` over a selection of the project, as every dbt step of the pipeline is:
    daily partitions built in one run, dbt tests as asset checks, the warehouse pool."""
    return dbt_assets(
        manifest=dbt_project.manifest_path,
        project=dbt_project,
        partitions_def=daily_partitions,
        backfill_policy=dg.BackfillPolicy.single_run(),
        dagster_dbt_translator=MeterbookDbtTranslator(
            settings=DagsterDbtTranslatorSettings(enable_asset_checks=True)
        ),
        pool=WAREHOUSE_POOL,
        **selection,
    )


@_pipeline_dbt_assets(exclude=FINANCE_SELECTION)
def meterbook_dbt_models(
    context: dg.AssetExecutionContext, dbt: DbtCliResource, warehouse: WarehouseResource
) -> Iterator[Any]:
    """Usage to billable amounts: staging, intermediate and the billing marts."""
    yield from _build(context, dbt, warehouse)


@_pipeline_dbt_assets(
    select=FINANCE_SELECTION, exclude=RECONCILIATION_SELECTION, name="finance_dbt_models"
)
def finance_dbt_models(
    context: dg.AssetExecutionContext, dbt: DbtCliResource, warehouse: WarehouseResource
) -> Iterator[Any]:
    """The finance marts over the ledger replica; they run after the ledger is copied."""
    yield from _build(context, dbt, warehouse)


@_pipeline_dbt_assets(select=RECONCILIATION_SELECTION, name="reconciliation_dbt_models")
def reconciliation_dbt_models(
    context: dg.AssetExecutionContext, dbt: DbtCliResource, warehouse: WarehouseResource
) -> Iterator[Any]:
    """Meterbook vs the ledger vs Stripe's meter counts: after the counts are read back."""
    yield from _build(context, dbt, warehouse)
