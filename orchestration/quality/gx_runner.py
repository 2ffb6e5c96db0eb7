"""Run one Great Expectations suite over one in-memory frame and report what failed.

Every gate in this project validates a frame computed in the warehouse (a profile or the batch
itself), so they share this: an ephemeral GX context, a whole-dataframe batch, and a result
reduced to the failing expectations with sample values, ready to be Dagster check metadata.

``great_expectations`` takes ~11 s to import, so it is imported here, inside the function, never
when Dagster loads the code location.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

MAX_SAMPLE_VALUES = 10


@dataclass(frozen=True)
class SuiteOutcome:
    """What a gate reports: passed or not, how much it looked at, and what failed."""

    success: bool
    rows: int
    failures: list[dict[str, Any]]
    # Rows of the validated frame that broke an expectation (a few, as strings) for the UI.
    sample_rows: list[dict[str, str]]


def run_suite(
    suite_name: str,
    build_suite: Callable[[Any], Any],
    frame: Any,
    *,
    row_identity: list[str] | None = None,
) -> SuiteOutcome:
    """Validate ``frame`` (pandas) with the suite ``build_suite(gx)`` returns.

    ``row_identity`` names the columns that identify a row; the failing rows' identities are
    reported as samples so a reader can find them in the warehouse.
    """
    import great_expectations as gx

    context = gx.get_context(mode="ephemeral")
    batch_definition = (
        context.data_sources.add_pandas("warehouse")
        .add_dataframe_asset(suite_name)
        .add_batch_definition_whole_dataframe("partition")
    )
    suite = context.suites.add(build_suite(gx))
    validation = context.validation_definitions.add(
        gx.ValidationDefinition(name=suite_name, data=batch_definition, suite=suite)
    )
    result = validation.run(
        batch_parameters={"dataframe": frame},
        result_format={"result_format": "COMPLETE"} if row_identity else "SUMMARY",
    )
    failures: list[dict[str, Any]] = []
    failing_indexes: set[int] = set()
    for expectation_result in result.results:
        if expectation_result.success:
            continue
        config = expectation_result.expectation_config
        details = expectation_result.result or {}
        failures.append(
            {
                "expectation": config.type,
                "kwargs": {k: str(v) for k, v in config.kwargs.items() if k != "batch_id"},
                "unexpected_count": details.get("unexpected_count"),
                "sample_unexpected": [str(v) for v in details.get("partial_unexpected_list", [])][
                    :MAX_SAMPLE_VALUES
                ],
            }
        )
        failing_indexes.update(details.get("unexpected_index_list") or [])
    sample_rows: list[dict[str, str]] = []
    if row_identity and failing_indexes:
        for index in sorted(failing_indexes, key=str)[:MAX_SAMPLE_VALUES]:
            row = frame.loc[index] if not isinstance(index, dict) else index
            sample_rows.append({column: str(row[column]) for column in row_identity})
    return SuiteOutcome(
        success=bool(result.success),
        rows=len(frame),
        failures=failures,
        sample_rows=sample_rows,
    )
