"""The one partitions definition: a day of *arrival* (the day a raw usage file was written)."""

from __future__ import annotations

import dagster as dg

from orchestration.settings import get_settings

daily_partitions = dg.DailyPartitionsDefinition(
    start_date=get_settings().partitions_start_date, timezone="UTC"
)
