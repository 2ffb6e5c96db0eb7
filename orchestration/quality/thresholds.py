"""The thresholds of the gates and anomaly warnings, from ``thresholds.toml`` (or a copy)."""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

DEFAULT_THRESHOLDS_FILE = Path(__file__).with_name("thresholds.toml")


@dataclass(frozen=True)
class Thresholds:
    max_schema_error_share: Decimal
    min_lines_for_schema_share: int
    volume_window_days: int
    volume_min_history_days: int
    volume_stddevs: Decimal
    max_quarantined_share: Decimal
    max_duplicate_share: Decimal
    max_revenue_change_share: Decimal


def load_thresholds(path: Path | None = None) -> Thresholds:
    """Read the thresholds; a missing key is an error naming the file and the key."""
    source = path or Path(os.environ.get("METERBOOK_QUALITY_CONFIG", DEFAULT_THRESHOLDS_FILE))
    with source.open("rb") as handle:
        config = tomllib.load(handle, parse_float=Decimal)
    values: dict[str, object] = {}
    for section in ("gates", "anomalies"):
        values.update(config.get(section, {}))
    missing = [name for name in Thresholds.__dataclass_fields__ if name not in values]
    if missing:
        raise ValueError(
            f"{source}: missing quality thresholds {missing}; copy them from "
            f"{DEFAULT_THRESHOLDS_FILE}."
        )
    return Thresholds(
        max_schema_error_share=Decimal(str(values["max_schema_error_share"])),
        min_lines_for_schema_share=int(str(values["min_lines_for_schema_share"])),
        volume_window_days=int(str(values["volume_window_days"])),
        volume_min_history_days=int(str(values["volume_min_history_days"])),
        volume_stddevs=Decimal(str(values["volume_stddevs"])),
        max_quarantined_share=Decimal(str(values["max_quarantined_share"])),
        max_duplicate_share=Decimal(str(values["max_duplicate_share"])),
        max_revenue_change_share=Decimal(str(values["max_revenue_change_share"])),
    )
