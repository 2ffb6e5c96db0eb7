"""Bad input for the reliability harness: a seeded corpus of bad lines and bad files, ingested.

``build_corpus(raw_dir, scale=…, seed=…)`` writes, under ``raw_dir``, a Stripe customers export
and gzip NDJSON hour files (``usage/date=D/hour=HH/*.ndjson.gz``, the contract of
``../shared/README.md`` §2) for three arrival days:

- ``MAIN_DAY``: 24 hour files of valid events (the sample data's conventions: known customers,
  the price book's models, token counts below the limits, ``occurred_at`` shortly before
  ``received_at``) with every *line kind* of ``LINE_KINDS`` mixed in at random places, plus the
  non-failing *file kinds*: empty files, a file delivered twice, files without a final newline.
  Lines DuckDB's CSV reader cannot split (bytes that are not UTF-8, carriage returns, lines over
  1 MiB) go to hours ``BYTE_LEVEL_HOURS`` only, so hours 0-19 are read by DuckDB and 20-23 by
  ingestion's Python fallback;
- ``NEXT_DAY``: copies of main-day events that arrive a day later (duplicates, conflicts);
- ``FAILURE_DAY``: a few valid lines, the day on which whole-file failures are injected.

Every line carries what ingestion must make of it (``Line.status``, ``Line.reason``, and for a
line that parses, its ``event_id`` and UTC instants), so ``run_bad_input`` can check each line,
not only totals. ``run_bad_input(work_dir, scale=…, seed=…)`` then ingests the days with
``ingest_usage_day`` into a DuckDB file (opened as the pipeline opens it), checks, grows a file and
re-ingests, injects the failing file kinds one at a time, re-runs the days in reverse order, and
returns a ``BadInputRun``: one ``KindResult`` per kind and one per whole-corpus check. When a day
fails, every line kind is also ingested alone, so that the kinds that fail a day are named.
``tests/reliability/test_bad_input.py`` asserts on it; ``bench/reliability_bad_input.py`` writes
it to ``docs/reliability.md``.

Same seed and scale, same bytes: everything random comes from one ``random.Random(seed)`` drawn
in a fixed order; gzip members carry ``mtime`` 0.
"""

from __future__ import annotations

import csv
import functools
import gzip
import json
import os
import random
import shutil
import time
import zlib
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import duckdb

from ingestion.sample_data import (
    EVENT_TYPE,
    GZIP_LEVEL,
    MODEL_WEIGHTS,
    REQUEST_KINDS,
    USAGE_FILE_NAME,
)
from ingestion.stripe_exports import STRIPE_EXPORT_TABLES, load_stripe_exports
from ingestion.usage_events import (
    ARRIVAL_DAY_TOLERANCE_HOURS,
    MAX_CLOCK_SKEW_MINUTES,
    MAX_LATENESS_DAYS,
    MAX_LINE_BYTES,
    MAX_TOKENS_PER_EVENT,
    TOKEN_FIELDS,
    IngestionError,
    IngestionResult,
    ingest_usage_day,
)

SCALE_VARIABLE = "METERBOOK_RELIABILITY_SCALE"
# Instances of each line kind (a duplicate pair is one instance); valid carrier lines are
# VALID_LINES_PER_INSTANCE times as many.
INSTANCES_BY_SCALE = {"reduced": 300, "full": 30_000}
# Variants of each failing file kind, and lines longer than 1 MiB, per scale.
FILE_VARIANTS_BY_SCALE = {"reduced": 3, "full": 12}
HUGE_LINES_BY_SCALE = {"reduced": 3, "full": 12}
# Lines over 64 KiB are big: at most this many of them.
MAX_LONG_LINES = 1_000
VALID_LINES_PER_INSTANCE = 10
SEED = 20_261_003

MAIN_DAY = date(2026, 10, 3)
NEXT_DAY = date(2026, 10, 4)
FAILURE_DAY = date(2026, 10, 5)
DAYS = (MAIN_DAY, NEXT_DAY, FAILURE_DAY)
BYTE_LEVEL_HOURS = (20, 21, 22, 23)
READABLE_HOURS = tuple(h for h in range(24) if h not in BYTE_LEVEL_HOURS)
NEXT_DAY_HOURS = (0, 1, 2, 3)
FAILURE_DAY_HOURS = (8, 9)
FAILURE_DAY_LINES = 40
DELIVERED_TWICE_HOUR = 7
GROWING_HOUR = 10
NO_FINAL_NEWLINE_HOURS = (19, 23)
EMPTY_FILE_NAMES = ("hour=05/part-0001.ndjson.gz", "hour=21/part-0001.ndjson.gz")
DELIVERED_AGAIN_AS = ("hour=07/part-0001.ndjson.gz", "hour=08/part-0009.ndjson.gz")
GROWTH_LINES_SHARE = 1.0  # of the instances per kind
PARTIAL_WRITE_LINES = 20
# As the pipeline's warehouse resource opens it (METERBOOK_DUCKDB_MEMORY_LIMIT's default).
DUCKDB_CONFIG = {"memory_limit": "1GB"}
KNOWN_CUSTOMERS = 25
UNKNOWN_CUSTOMERS = 3
HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS
MINUTE_MS = 60_000

ACCEPTED = "accepted"
DUPLICATE = "duplicate"
QUARANTINED = "quarantined"
CONFLICT = "conflicting_duplicate"
# Every reason ingestion gives (README, "Quarantine reasons"): the corpus produces each.
QUARANTINE_REASONS: frozenset[str] = frozenset(
    {
        "empty_line",
        "line_too_long",
        "invalid_json",
        "not_a_json_object",
        "missing_event_id",
        "invalid_event_id",
        "missing_customer_id",
        "invalid_customer_id",
        "missing_event_type",
        "unknown_event_type",
        *(
            f"{rule}_{timestamp}"
            for timestamp in ("occurred_at", "received_at")
            for rule in ("missing", "invalid")
        ),
        "occurred_at_without_time_zone",
        "received_at_without_time_zone",
        "received_at_outside_file_day",
        "occurred_at_in_future",
        "occurred_at_too_old",
        "missing_model",
        "missing_tool",
        "invalid_tool",
        *(
            reason
            for tokens in ("input_tokens", "output_tokens", "cache_read_tokens", "cost_minor")
            for reason in (
                f"missing_{tokens}",
                f"invalid_{tokens}_type",
                f"negative_{tokens}",
                f"{tokens}_too_large",
            )
        ),
        "unknown_customer",
        CONFLICT,
    }
)


def reliability_scale() -> str:
    """``reduced`` (CI) or ``full``, from ``METERBOOK_RELIABILITY_SCALE``."""
    scale = os.environ.get(SCALE_VARIABLE, "reduced").strip() or "reduced"
    if scale not in INSTANCES_BY_SCALE:
        raise ValueError(
            f"{SCALE_VARIABLE}={scale!r}: expected one of {', '.join(INSTANCES_BY_SCALE)}"
        )
    return scale


# --- kinds ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Kind:
    """One kind of bad input: what is injected and what ingestion must make of it."""

    name: str
    injected: str
    outcome: str
    level: str  # "line", "file" (ingested) or "failing file" (the whole day fails)


LINE_KINDS: tuple[Kind, ...] = (
    Kind(
        "valid",
        "valid events around the bad ones (the carrier), sample-data conventions",
        "accepted",
        "line",
    ),
    Kind(
        "invalid_json",
        "JSON syntax errors: a missing colon, a line cut short, single quotes, trailing text, "
        "two objects on one line, an unescaped quote, a leading zero, a comment",
        "quarantined: invalid_json",
        "line",
    ),
    Kind(
        "not_a_json_object",
        "valid JSON that is not an object: the event inside an array, a string holding the "
        "event, numbers, true, null, []",
        "quarantined: not_a_json_object",
        "line",
    ),
    Kind(
        "non_utf8",
        "bytes that are not UTF-8 in a string of an otherwise valid event (\\xff, Latin-1 é, a "
        "lone continuation byte, a cut multi-byte sequence, an overlong form, a surrogate)",
        "quarantined: invalid_json, raw text kept with \\xNN escapes",
        "line",
    ),
    Kind(
        "control_bytes",
        "raw control bytes inside the event_id string: NUL, record separator, VT, FF, ESC, BEL, "
        "a carriage return mid-line",
        "quarantined: invalid_json",
        "line",
    ),
    Kind(
        "empty_line",
        "empty lines, spaces, tabs, the blank line of a CRLF file",
        "quarantined: empty_line",
        "line",
    ),
    Kind(
        "line_too_long",
        "valid events padded past 64 KiB (to 128 KiB; a few over 1 MiB; at most 1,000 lines), "
        "and one of exactly 64 KiB",
        "quarantined: line_too_long; the one of exactly 64 KiB accepted",
        "line",
    ),
    Kind(
        "string_tokens",
        'a token count as a string ("12", "", "12abc", "1e3")',
        "quarantined: invalid_<tokens>_type",
        "line",
    ),
    Kind(
        "float_tokens",
        "a token count as a float (1.5, 12.0, 1e3, 0.1, -0.5)",
        "quarantined: invalid_<tokens>_type",
        "line",
    ),
    Kind(
        "non_numeric_tokens",
        "a token count as true, false, null, [], {}",
        "quarantined: invalid_<tokens>_type",
        "line",
    ),
    Kind(
        "negative_tokens",
        "a negative token count (-1 to -2**63)",
        "quarantined: negative_<tokens>",
        "line",
    ),
    Kind(
        "huge_tokens",
        "a token count over 100,000,000, up to 2**64 - 1",
        "quarantined: <tokens>_too_large",
        "line",
    ),
    Kind(
        "tokens_beyond_64_bits",
        "a token count beyond 64 bits (2**64, 10**20, -2**63 - 1): JSON reads it as a float",
        "quarantined: invalid_<tokens>_type",
        "line",
    ),
    Kind(
        "nan_infinity",
        "NaN, Infinity, -Infinity literals as a token count, the event_id or occurred_at",
        "quarantined: invalid_<tokens>_type / invalid_event_id / invalid_occurred_at",
        "line",
    ),
    Kind(
        "missing_ids",
        "no event_id, no customer_id",
        "quarantined: missing_event_id / missing_customer_id",
        "line",
    ),
    Kind(
        "invalid_ids",
        'event_id or customer_id as a number, null, "", an array, true; an event_id over 128 '
        "characters",
        "quarantined: invalid_event_id / invalid_customer_id",
        "line",
    ),
    Kind(
        "missing_timestamps",
        "no occurred_at, no received_at",
        "quarantined: missing_occurred_at / missing_received_at",
        "line",
    ),
    Kind(
        "missing_fields",
        'no event_type; no model, "" or null; no properties; a token count missing',
        "quarantined: missing_event_type / missing_model / missing_<tokens>",
        "line",
    ),
    Kind(
        "tool_calls",
        "tool calls: valid ones (no model, no tokens; a model call's fields on them ignored), "
        'and ones without a tool, a tool of "", null or 5, no cost, a cost as a string, a '
        "float, null, negative, over 100,000,000 or beyond 64 bits",
        "accepted / quarantined: missing_tool / invalid_tool / missing_cost_minor / "
        "invalid_cost_minor_type / negative_cost_minor / cost_minor_too_large",
        "line",
    ),
    Kind(
        "unknown_event_type",
        'event_type "page_view", "MODEL_CALL", "", null, 5',
        "quarantined: unknown_event_type",
        "line",
    ),
    Kind(
        "unknown_customer",
        "customer ids Stripe does not know, a known id in upper case or with a space",
        "quarantined: unknown_customer",
        "line",
    ),
    Kind(
        "exact_duplicate",
        "an event sent again: the same bytes later in the file or in a later hour, a retry "
        "with a later received_at, the same content with occurred_at in another offset and "
        "the keys reordered",
        "first copy accepted, the others duplicate",
        "line",
    ),
    Kind(
        "conflicting_duplicate",
        "the same event_id again with other content (output_tokens, model, occurred_at, "
        "another known customer, request_kind), sometimes twice",
        "first copy accepted, the others quarantined: conflicting_duplicate",
        "line",
    ),
    Kind(
        "copies_out_of_order",
        "two copies of an event_id with different content where the one placed later (later "
        "in the file or in a later hour file) was received earlier",
        "the earlier received copy accepted, the other conflicting_duplicate",
        "line",
    ),
    Kind(
        "cross_day_copies",
        "copies of main-day events arriving the next day: the same content, or other content",
        "the next day's copy duplicate, or conflicting_duplicate",
        "line",
    ),
    Kind(
        "future_timestamps",
        "occurred_at more than 5 minutes after received_at, up to 9999-12-31",
        "quarantined: occurred_at_in_future",
        "line",
    ),
    Kind(
        "ancient_timestamps",
        "occurred_at more than 35 days before received_at, down to 0001-01-01",
        "quarantined: occurred_at_too_old",
        "line",
    ),
    Kind(
        "received_outside_day",
        "received_at more than 6 h outside the file's arrival day (1970, 2099 included)",
        "quarantined: received_at_outside_file_day",
        "line",
    ),
    Kind(
        "late_and_skewed",
        "occurred_at 1 hour to 34 days before received_at, or up to 4 min 59 s after it",
        "accepted, timestamps as sent",
        "line",
    ),
    Kind(
        "without_time_zone",
        "occurred_at or received_at without a zone (with T or a space, with or without "
        "seconds and fractions)",
        "quarantined: occurred_at_without_time_zone / received_at_without_time_zone",
        "line",
    ),
    Kind(
        "non_utc_offsets",
        "timestamps with offsets from -23:59 to +23:59 (+05:30, -08:00, +14:00, -00:00, …) "
        "and 0 to 9 fraction digits, for the same instants",
        "accepted, stored in UTC",
        "line",
    ),
    Kind(
        "impossible_offsets",
        "offsets that are not RFC 3339 or out of range: +24:00, +99:00, -25:00, +05:60, +0530, "
        '+05, +5:30, " UTC", a lower-case z',
        "quarantined: invalid_occurred_at / invalid_received_at",
        "line",
    ),
    Kind(
        "invalid_timestamps",
        "month 13, 30 February, hour 25, a leap second, a date only, words, an empty string, "
        "epoch seconds as a number",
        "quarantined: invalid_occurred_at / invalid_received_at",
        "line",
    ),
    Kind(
        "crlf_line_end",
        "a valid event whose line ends in CRLF",
        "accepted",
        "line",
    ),
    Kind(
        "unicode_text",
        "valid events with non-ASCII UTF-8 text (request_kind with é, ✓, 日本語, an emoji)",
        "accepted, text as sent",
        "line",
    ),
    Kind(
        "trailing_comma",
        "an object with a trailing comma: not RFC 8259 JSON, but DuckDB's reader accepts it",
        "accepted (a documented leniency)",
        "line",
    ),
)

FILE_KINDS: tuple[Kind, ...] = (
    Kind(
        "empty_file",
        "gzip files without a line, next to other files of their hour",
        "recorded in usage_files with 0 lines",
        "file",
    ),
    Kind(
        "file_delivered_twice",
        "an hour file delivered again under a second name (same hour, and another hour)",
        "every line of the copy: duplicate where the original is accepted, else as the original",
        "file",
    ),
    Kind(
        "no_final_newline",
        "files whose last line has no newline (one read by DuckDB, one in Python)",
        "the last line counted and classified like any other",
        "file",
    ),
    Kind(
        "growing_file",
        "a file ingested, then grown by a second gzip member (new events, retries, conflicts, "
        "bad lines) and its day re-ingested",
        "old lines unchanged, new ones classified, nothing counted twice",
        "file",
    ),
    Kind(
        "truncated_gzip",
        "a gzip file cut at a random byte (after the header)",
        "whole-file error naming the file; nothing of the day written; fine once removed",
        "failing file",
    ),
    Kind(
        "corrupt_gzip",
        "one byte changed in the compressed data or the CRC (a stored block too: the content "
        "reads without error, only the CRC tells)",
        "whole-file error naming the file; nothing of the day written; fine once removed",
        "failing file",
    ),
    Kind(
        "not_gzip",
        "plain NDJSON, random bytes, a bzip2 file under the .ndjson.gz name",
        "whole-file error naming the file; nothing of the day written; fine once removed",
        "failing file",
    ),
    Kind(
        "zero_byte_file",
        "a file of 0 bytes (created, never written)",
        "whole-file error naming the file; nothing of the day written; fine once removed",
        "failing file",
    ),
    Kind(
        "partial_write",
        "a file still being written: gzip blocks flushed, no end (a writer mid-stream); later "
        "complete",
        "whole-file error naming the file while partial; its lines accepted once complete",
        "failing file",
    ),
)

ALL_KINDS: dict[str, Kind] = {kind.name: kind for kind in (*LINE_KINDS, *FILE_KINDS)}


# --- the corpus -------------------------------------------------------------------------------


@dataclass(slots=True)
class Line:
    """One raw line and what ingestion must make of it."""

    kind: str
    day: date
    hour: int
    order_ms: int  # its place in the hour file
    body: bytes  # without the line's "\n"
    status: str
    reason: str | None = None
    # For a line that reaches ingest.usage_event_lines (accepted, duplicate or conflict):
    event_id: str | None = None
    occurred_ms: int | None = None
    received_ms: int | None = None
    source_file: str = ""
    line_number: int = 0


@dataclass
class Corpus:
    """The lines written and the files holding them."""

    seed: int
    scale: str
    raw_dir: Path
    customers: list[str]
    unknown_customers: list[str]
    lines: list[Line] = field(default_factory=list)
    # Files with their line count from the bytes written (not from the plan).
    file_lines: dict[str, int] = field(default_factory=dict)
    file_kinds: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    # Lines written later: appended to a file after its first ingestion; complete files of
    # the partial writes.
    growth: list[Line] = field(default_factory=list)
    partial_writes: list[list[Line]] = field(default_factory=list)
    # Draws for the failing files, after the corpus's own.
    rng: random.Random = field(default_factory=random.Random)

    @property
    def usage_dir(self) -> Path:
        return self.raw_dir / "usage"


class _Generator:
    """Draws events and bad lines from one seeded ``random.Random``."""

    def __init__(self, seed: int, scale: str) -> None:
        self.rng = random.Random(seed)
        self.seed = seed
        self.scale = scale
        self.sequence = 0
        self.lines: list[Line] = []
        self.customers = [self._customer_id() for _ in range(KNOWN_CUSTOMERS)]
        self.unknown_customers = [self._customer_id() for _ in range(UNKNOWN_CUSTOMERS)]
        self.models = list(MODEL_WEIGHTS)
        self.model_weights = list(MODEL_WEIGHTS.values())

    def _customer_id(self) -> str:
        letters = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
        return "cus_" + "".join(self.rng.choice(letters) for _ in range(14))

    def hour(self, *, byte_level: bool = False) -> int:
        return self.rng.choice(BYTE_LEVEL_HOURS if byte_level else READABLE_HOURS)

    def event(
        self, day: date = MAIN_DAY, hour: int | None = None, *, byte_level: bool = False
    ) -> tuple[dict[str, Any], int, int, int]:
        """A valid event received in ``hour`` of ``day``: (event, hour, occurred_ms,
        received_ms)."""
        hour = self.hour(byte_level=byte_level) if hour is None else hour
        received_ms = _epoch_ms(day) + hour * HOUR_MS + self.rng.randrange(HOUR_MS)
        occurred_ms = received_ms - self.rng.randrange(50, 3_000)
        self.sequence += 1
        event = {
            "event_id": f"evt_{self.seed:x}s{day:%Y%m%d}h{hour:02d}n{self.sequence}",
            "customer_id": self.rng.choice(self.customers),
            "event_type": EVENT_TYPE,
            "occurred_at": _iso(occurred_ms),
            "received_at": _iso(received_ms),
            "properties": {
                "model": self.rng.choices(self.models, self.model_weights)[0],
                "input_tokens": self.rng.randrange(1, 1_000_000),
                "output_tokens": self.rng.randrange(1, 128_000),
                "cache_read_tokens": self.rng.randrange(0, 4_000_000),
                "request_kind": self.rng.choice(REQUEST_KINDS),
            },
        }
        return event, hour, occurred_ms, received_ms

    def add(
        self,
        kind: str,
        body: bytes | str,
        *,
        hour: int,
        order_ms: int,
        status: str,
        reason: str | None = None,
        event: dict[str, Any] | None = None,
        occurred_ms: int | None = None,
        received_ms: int | None = None,
        day: date = MAIN_DAY,
    ) -> Line:
        parsed = status != QUARANTINED or reason == CONFLICT
        line = Line(
            kind=kind,
            day=day,
            hour=hour,
            order_ms=order_ms,
            body=body.encode() if isinstance(body, str) else body,
            status=status,
            reason=reason,
            event_id=event["event_id"] if parsed and event is not None else None,
            occurred_ms=occurred_ms if parsed else None,
            received_ms=received_ms if parsed else None,
        )
        self.lines.append(line)
        return line

    def accepted(
        self,
        kind: str,
        event: dict[str, Any],
        hour: int,
        occ: int,
        rec: int,
        *,
        day: date = MAIN_DAY,
    ) -> Line:
        return self.add(
            kind,
            json.dumps(event),
            hour=hour,
            order_ms=rec,
            status=ACCEPTED,
            event=event,
            occurred_ms=occ,
            received_ms=rec,
            day=day,
        )

    def quarantined(self, kind: str, body: bytes | str, reason: str, *, hour: int) -> Line:
        order_ms = _epoch_ms(MAIN_DAY) + hour * HOUR_MS + self.rng.randrange(HOUR_MS)
        return self.add(kind, body, hour=hour, order_ms=order_ms, status=QUARANTINED, reason=reason)


@functools.cache
def _epoch_ms(day: date) -> int:
    return int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp()) * 1000


def _iso(
    epoch_ms: int, *, offset_minutes: int = 0, digits: int = 3, zone: str | None = None
) -> str:
    """``epoch_ms`` as RFC 3339: local time at ``offset_minutes`` with that offset (or ``Z``)."""
    seconds, millis = divmod(epoch_ms + offset_minutes * MINUTE_MS, 1000)
    t = time.gmtime(seconds)
    text = (
        f"{t.tm_year:04d}-{t.tm_mon:02d}-{t.tm_mday:02d}T"
        f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d}"
    )
    if digits:
        text += "." + f"{millis:03d}{'0' * 6}"[:digits]
    if zone is not None:
        return text + zone
    if offset_minutes == 0:
        return text + "Z"
    sign = "+" if offset_minutes > 0 else "-"
    hours, minutes = divmod(abs(offset_minutes), 60)
    return f"{text}{sign}{hours:02d}:{minutes:02d}"


def _with_literal(event: dict[str, Any], path: tuple[str, ...], literal: str) -> str:
    """The event as JSON with the value at ``path`` written as ``literal`` (any text)."""
    target = event
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = "__LITERAL__"
    return json.dumps(event).replace('"__LITERAL__"', literal, 1)


def _without(event: dict[str, Any], path: tuple[str, ...]) -> dict[str, Any]:
    target = event
    for key in path[:-1]:
        target = target[key]
    del target[path[-1]]
    return event


# --- line kinds -------------------------------------------------------------------------------


def _valid(g: _Generator, count: int) -> None:
    for _ in range(count):
        event, hour, occ, rec = g.event(byte_level=g.rng.random() < 0.15)
        g.accepted("valid", event, hour, occ, rec)


def _invalid_json(g: _Generator, count: int) -> None:
    for number in range(count):
        event, hour, _, _ = g.event()
        line = json.dumps(event)
        variant = number % 8
        if variant == 0:
            body = line.replace('"customer_id": ', '"customer_id" ', 1)
        elif variant == 1:
            body = line[: g.rng.randrange(1, len(line) - 1)]
        elif variant == 2:
            body = line.replace('"', "'")
        elif variant == 3:
            body = line + " trailing text"
        elif variant == 4:
            body = line + line
        elif variant == 5:
            body = line.replace('"model": "', '"model": "un"escaped', 1)
        elif variant == 6:
            body = _with_literal(
                event, ("properties", "input_tokens"), "0" + str(g.rng.randrange(1, 99))
            )
        else:
            body = line + " // comment"
        g.quarantined("invalid_json", body, "invalid_json", hour=hour)


def _not_a_json_object(g: _Generator, count: int) -> None:
    for number in range(count):
        event, hour, _, _ = g.event()
        body = [
            json.dumps([event]),
            json.dumps(json.dumps(event)),
            str(g.rng.randrange(-1000, 1000)),
            "true",
            "null",
            "[]",
            '"evt"',
        ][number % 7]
        g.quarantined("not_a_json_object", body, "not_a_json_object", hour=hour)


NON_UTF8_BYTES = (
    b"\xff",
    b"\xfe\xff",
    b"\xe9",  # Latin-1 é
    b"\x80",
    b"\xc3",
    b"\xe2\x82",
    b"\xc0\xaf",
    b"\xed\xa0\x80",
    b"\xf8\x88\x80\x80\x80",
)


def _non_utf8(g: _Generator, count: int) -> None:
    fields = (
        ("event_id",),
        ("customer_id",),
        ("properties", "model"),
        ("properties", "request_kind"),
    )
    for number in range(count):
        event, hour, _, _ = g.event(byte_level=True)
        path = fields[number % len(fields)]
        target = event
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = str(target[path[-1]]) + "__BAD__"
        bad = NON_UTF8_BYTES[number % len(NON_UTF8_BYTES)]
        body = json.dumps(event).encode().replace(b"__BAD__", bad + b"x")
        g.quarantined("non_utf8", body, "invalid_json", hour=hour)


def _control_bytes(g: _Generator, count: int) -> None:
    controls = (b"\x00", b"\x1e", b"\x0b", b"\x0c", b"\x1b", b"\x07", b"\r")
    for number in range(count):
        event, hour, _, _ = g.event(byte_level=True)
        event["event_id"] += "__CTRL__"
        body = json.dumps(event).encode().replace(b"__CTRL__", controls[number % len(controls)])
        g.quarantined("control_bytes", body, "invalid_json", hour=hour)


def _empty_line(g: _Generator, count: int) -> None:
    for number in range(count):
        variant = number % 6
        body = (b"", b" ", b"   ", b"\t", b" \t ", b"\r")[variant]
        hour = g.hour(byte_level=variant == 5)
        g.quarantined("empty_line", body, "empty_line", hour=hour)


def _line_too_long(g: _Generator, count: int) -> None:
    huge = HUGE_LINES_BY_SCALE[g.scale]
    for number in range(min(count, MAX_LONG_LINES)):
        event, hour, occ, rec = g.event(byte_level=number < huge)
        event["properties"]["request_kind"] = ""
        bare = len(json.dumps(event))
        if number == huge:  # exactly the limit: still accepted
            event["properties"]["request_kind"] = "x" * (MAX_LINE_BYTES - bare)
            g.accepted("line_too_long", event, hour, occ, rec)
            continue
        if number < huge:  # over DuckDB's maximum line size (1 MiB)
            size = g.rng.randrange(1 << 20, 3 << 19)
        elif number == huge + 1:
            size = MAX_LINE_BYTES + 1
        else:
            size = g.rng.randrange(MAX_LINE_BYTES + 1, 2 * MAX_LINE_BYTES)
        event["properties"]["request_kind"] = "x" * (size - bare)
        g.quarantined("line_too_long", json.dumps(event), "line_too_long", hour=hour)


def _token_kind(
    name: str, literals: Callable[[_Generator, int], str], reason: str
) -> Callable[[_Generator, int], None]:
    def make(g: _Generator, count: int) -> None:
        for number in range(count):
            event, hour, _, _ = g.event()
            token = TOKEN_FIELDS[number % len(TOKEN_FIELDS)]
            body = _with_literal(event, ("properties", token), literals(g, number))
            g.quarantined(name, body, reason.format(tokens=token), hour=hour)

    return make


_string_tokens = _token_kind(
    "string_tokens",
    lambda g, n: ['"12"', '""', '"12abc"', '"1e3"', f'"{g.rng.randrange(1, 10**6)}"'][n % 5],
    "invalid_{tokens}_type",
)
_float_tokens = _token_kind(
    "float_tokens",
    lambda g, n: ["1.5", "12.0", "1e3", "0.1", "-0.5", f"{g.rng.randrange(1, 10**6)}.25"][n % 6],
    "invalid_{tokens}_type",
)
_non_numeric_tokens = _token_kind(
    "non_numeric_tokens",
    lambda g, n: ["true", "false", "null", "[]", "{}", "[1]", '{"n": 1}'][n % 7],
    "invalid_{tokens}_type",
)
_negative_tokens = _token_kind(
    "negative_tokens",
    lambda g, n: str([-1, -g.rng.randrange(2, 10**6), -(2**63), -(2**31)][n % 4]),
    "negative_{tokens}",
)
_huge_tokens = _token_kind(
    "huge_tokens",
    lambda g, n: str(
        [
            MAX_TOKENS_PER_EVENT + 1,
            g.rng.randrange(MAX_TOKENS_PER_EVENT + 2, 2**63),
            2**63 - 1,
            2**63,
            g.rng.randrange(2**63, 2**64),
            2**64 - 1,
        ][n % 6]
    ),
    "{tokens}_too_large",
)
_tokens_beyond_64_bits = _token_kind(
    "tokens_beyond_64_bits",
    lambda g, n: str([2**64, 10**20, g.rng.randrange(2**64, 10**30), -(2**63) - 1][n % 4]),
    "invalid_{tokens}_type",
)


def _nan_infinity(g: _Generator, count: int) -> None:
    literals = ("NaN", "Infinity", "-Infinity")
    for number in range(count):
        event, hour, _, _ = g.event()
        literal = literals[number % 3]
        where = (number // 3) % 5
        if where < 3:
            token = TOKEN_FIELDS[where]
            body = _with_literal(event, ("properties", token), literal)
            reason = f"invalid_{token}_type"
        elif where == 3:
            body, reason = _with_literal(event, ("event_id",), literal), "invalid_event_id"
        else:
            body, reason = _with_literal(event, ("occurred_at",), literal), "invalid_occurred_at"
        g.quarantined("nan_infinity", body, reason, hour=hour)


def _missing_ids(g: _Generator, count: int) -> None:
    for number in range(count):
        event, hour, _, _ = g.event()
        name = ("event_id", "customer_id")[number % 2]
        g.quarantined(
            "missing_ids", json.dumps(_without(event, (name,))), f"missing_{name}", hour=hour
        )


def _invalid_ids(g: _Generator, count: int) -> None:
    for number in range(count):
        event, hour, _, _ = g.event()
        name = ("event_id", "customer_id")[number % 2]
        literal = ["12345", "null", '""', '["evt"]', "true", '{"id": "x"}'][(number // 2) % 6]
        if name == "event_id" and (number // 2) % 7 == 6:
            literal = json.dumps("evt_" + "x" * 125)  # 129 characters
        g.quarantined(
            "invalid_ids", _with_literal(event, (name,), literal), f"invalid_{name}", hour=hour
        )


def _missing_timestamps(g: _Generator, count: int) -> None:
    for number in range(count):
        event, hour, _, _ = g.event()
        name = ("occurred_at", "received_at")[number % 2]
        body = json.dumps(_without(event, (name,)))
        g.quarantined("missing_timestamps", body, f"missing_{name}", hour=hour)


def _missing_fields(g: _Generator, count: int) -> None:
    for number in range(count):
        event, hour, _, _ = g.event()
        variant = number % 6
        if variant == 0:
            body, reason = json.dumps(_without(event, ("event_type",))), "missing_event_type"
        elif variant == 1:
            body, reason = json.dumps(_without(event, ("properties", "model"))), "missing_model"
        elif variant == 2:
            event["properties"]["model"] = g.rng.choice(["", None])
            body, reason = json.dumps(event), "missing_model"
        elif variant == 3:
            body, reason = json.dumps(_without(event, ("properties",))), "missing_model"
        else:
            token = TOKEN_FIELDS[g.rng.randrange(3)]
            body = json.dumps(_without(event, ("properties", token)))
            reason = f"missing_{token}"
        g.quarantined("missing_fields", body, reason, hour=hour)


def _tool_calls(g: _Generator, count: int) -> None:
    """Tool calls, half of them valid, the others each breaking one rule of their own."""
    broken: tuple[tuple[str | None, str, str], ...] = (
        ("tool", "", "missing_tool"),
        ("tool", '""', "missing_tool"),
        ("tool", "null", "invalid_tool"),
        ("tool", "5", "invalid_tool"),
        ("cost_minor", "", "missing_cost_minor"),
        ("cost_minor", '"12"', "invalid_cost_minor_type"),
        ("cost_minor", "2.5", "invalid_cost_minor_type"),
        ("cost_minor", "null", "invalid_cost_minor_type"),
        ("cost_minor", "-3", "negative_cost_minor"),
        ("cost_minor", "100000001", "cost_minor_too_large"),
        ("cost_minor", str(2**64), "invalid_cost_minor_type"),
    )
    for number in range(count):
        event, hour, occ, rec = g.event()
        event["event_type"] = "tool_call"
        model_fields = event["properties"]
        event["properties"] = {
            "tool": g.rng.choice(["web_search", "sandbox_run", "code_index"]),
            "cost_minor": g.rng.randrange(0, 100_000),
        }
        if number % 2 == 0:
            if number % 4 == 0:  # a model call's fields on a tool call are not read
                event["properties"] |= model_fields
            g.accepted("tool_calls", event, hour, occ, rec)
            continue
        field_name, literal, reason = broken[(number // 2) % len(broken)]
        path = ("properties", field_name)
        body = (
            json.dumps(_without(event, path))
            if not literal
            else _with_literal(event, path, literal)
        )
        g.quarantined("tool_calls", body, reason, hour=hour)


def _unknown_event_type(g: _Generator, count: int) -> None:
    literals = ('"page_view"', '"MODEL_CALL"', '""', "null", "5", '"model_call "')
    for number in range(count):
        event, hour, _, _ = g.event()
        body = _with_literal(event, ("event_type",), literals[number % len(literals)])
        g.quarantined("unknown_event_type", body, "unknown_event_type", hour=hour)


def _unknown_customer(g: _Generator, count: int) -> None:
    for number in range(count):
        event, hour, _, _ = g.event()
        variant = number % 4
        if variant < 2:
            event["customer_id"] = g.rng.choice(g.unknown_customers)
        elif variant == 2:
            event["customer_id"] = event["customer_id"].upper()
        else:
            event["customer_id"] += " "
        g.quarantined("unknown_customer", json.dumps(event), "unknown_customer", hour=hour)


def _copy(
    g: _Generator,
    kind: str,
    event: dict[str, Any],
    *,
    hour: int,
    after_ms: int,
    status: str,
    occ: int,
    body: str | None = None,
    day: date = MAIN_DAY,
) -> None:
    """A later copy of ``event`` (received after ``after_ms``, placed in ``hour`` of ``day``)."""
    day_start = _epoch_ms(day) + hour * HOUR_MS
    received_ms = max(after_ms + 1, day_start) + g.rng.randrange(0, 5 * MINUTE_MS)
    received_ms = min(received_ms, day_start + HOUR_MS - 1)
    copy = json.loads(json.dumps(event))
    copy["received_at"] = _iso(received_ms)
    g.add(
        kind,
        body if body is not None else json.dumps(copy),
        hour=hour,
        order_ms=received_ms,
        status=status,
        reason=CONFLICT if status == QUARANTINED else None,
        event=copy,
        occurred_ms=occ,
        received_ms=received_ms,
        day=day,
    )


def _exact_duplicate(g: _Generator, count: int) -> None:
    for number in range(count):
        event, hour, occ, rec = g.event(hour=g.rng.choice(READABLE_HOURS[:-1]))
        original = g.accepted("exact_duplicate", event, hour, occ, rec)
        variant = number % 4
        if variant == 0:  # the same bytes, later in the same file
            g.add(
                "exact_duplicate",
                original.body,
                hour=hour,
                order_ms=rec + 1,
                status=DUPLICATE,
                event=event,
                occurred_ms=occ,
                received_ms=rec,
            )
        elif variant == 1:  # the same bytes in a later hour file
            later = g.rng.choice([h for h in READABLE_HOURS if h > hour])
            g.add(
                "exact_duplicate",
                original.body,
                hour=later,
                order_ms=_epoch_ms(MAIN_DAY) + later * HOUR_MS,
                status=DUPLICATE,
                event=event,
                occurred_ms=occ,
                received_ms=rec,
            )
        elif variant == 2:  # an edge retry: a later received_at
            later = g.rng.choice([h for h in READABLE_HOURS if h >= hour])
            _copy(g, "exact_duplicate", event, hour=later, after_ms=rec, status=DUPLICATE, occ=occ)
        else:  # the same instant in another offset, keys in another order
            copy = json.loads(json.dumps(event))
            copy["occurred_at"] = _iso(occ, offset_minutes=g.rng.choice([-480, 120, 330]), digits=6)
            copy["properties"] = dict(reversed(list(copy["properties"].items())))
            reordered = dict(reversed(list(copy.items())))
            _copy(
                g,
                "exact_duplicate",
                reordered,
                hour=hour,
                after_ms=rec,
                status=DUPLICATE,
                occ=occ,
            )


def _conflicting_duplicate(g: _Generator, count: int) -> None:
    for number in range(count):
        event, hour, occ, rec = g.event(hour=g.rng.choice(READABLE_HOURS))
        g.accepted("conflicting_duplicate", event, hour, occ, rec)
        changed = json.loads(json.dumps(event))
        variant = number % 5
        changed_occ = occ
        if variant == 0:
            changed["properties"]["output_tokens"] += g.rng.randrange(1, 1000)
        elif variant == 1:
            changed["properties"]["model"] = next(
                m for m in g.models if m != event["properties"]["model"]
            )
        elif variant == 2:
            changed_occ = occ - 1_000
            changed["occurred_at"] = _iso(changed_occ)
        elif variant == 3:
            changed["customer_id"] = next(c for c in g.customers if c != event["customer_id"])
        else:
            changed["properties"]["request_kind"] = "conflict-" + str(number)
        later = g.rng.choice([h for h in READABLE_HOURS if h >= hour])
        _copy(
            g,
            "conflicting_duplicate",
            changed,
            hour=later,
            after_ms=rec,
            status=QUARANTINED,
            occ=changed_occ,
        )
        if number % 3 == 0:  # the conflicting content once more: still a conflict
            _copy(
                g,
                "conflicting_duplicate",
                changed,
                hour=later,
                after_ms=rec + 6 * MINUTE_MS,
                status=QUARANTINED,
                occ=changed_occ,
            )


def _copies_out_of_order(g: _Generator, count: int) -> None:
    for number in range(count):
        first_hour = g.rng.choice(READABLE_HOURS[:-1])
        event, _, occ, rec = g.event(hour=first_hour)
        hour_start = _epoch_ms(MAIN_DAY) + first_hour * HOUR_MS
        # Received first, but placed last: in a later hour file, or at the end of the same one.
        if number % 2:
            place = g.rng.choice([h for h in READABLE_HOURS if h > first_hour])
            order_ms = _epoch_ms(MAIN_DAY) + place * HOUR_MS + g.rng.randrange(HOUR_MS)
        else:
            place, order_ms = first_hour, hour_start + HOUR_MS - 1
        g.add(
            "copies_out_of_order",
            json.dumps(event),
            hour=place,
            order_ms=order_ms,
            status=ACCEPTED,
            event=event,
            occurred_ms=occ,
            received_ms=rec,
        )
        changed = json.loads(json.dumps(event))
        changed["properties"]["input_tokens"] += 1
        later_ms = rec + g.rng.randrange(1, 10 * MINUTE_MS)
        changed["received_at"] = _iso(later_ms)
        g.add(
            "copies_out_of_order",
            json.dumps(changed),
            hour=first_hour,
            order_ms=hour_start - 1,  # first in its file
            status=QUARANTINED,
            reason=CONFLICT,
            event=changed,
            occurred_ms=occ,
            received_ms=later_ms,
        )


def _cross_day_copies(g: _Generator, count: int) -> None:
    for number in range(count):
        event, hour, occ, rec = g.event(hour=g.rng.choice(READABLE_HOURS))
        g.accepted("cross_day_copies", event, hour, occ, rec)
        copy = json.loads(json.dumps(event))
        conflict = number % 3 == 2
        if conflict:
            copy["properties"]["cache_read_tokens"] += 1
        next_hour = g.rng.choice(NEXT_DAY_HOURS)
        _copy(
            g,
            "cross_day_copies",
            copy,
            hour=next_hour,
            after_ms=rec,
            status=QUARANTINED if conflict else DUPLICATE,
            occ=occ,
            day=NEXT_DAY,
        )


def _timestamp_kind(
    name: str, make: Callable[[_Generator, int, dict[str, Any], int, int], tuple[str, str]]
) -> Callable[[_Generator, int], None]:
    """Quarantined lines whose timestamps ``make`` rewrites: it returns (body, reason)."""

    def generate(g: _Generator, count: int) -> None:
        for number in range(count):
            event, hour, occ, rec = g.event()
            body, reason = make(g, number, event, occ, rec)
            g.quarantined(name, body, reason, hour=hour)

    return generate


def _future(
    g: _Generator, number: int, event: dict[str, Any], occ: int, rec: int
) -> tuple[str, str]:
    if number % 10 == 9:
        event["occurred_at"] = "9999-12-31T23:59:59Z"
    else:
        ahead = (MAX_CLOCK_SKEW_MINUTES * MINUTE_MS + 1_000) + g.rng.randrange(400 * DAY_MS)
        event["occurred_at"] = _iso(rec + ahead)
    return json.dumps(event), "occurred_at_in_future"


def _ancient(
    g: _Generator, number: int, event: dict[str, Any], occ: int, rec: int
) -> tuple[str, str]:
    variant = number % 10
    if variant == 8:
        event["occurred_at"] = "0001-01-01T00:00:00Z"
    elif variant == 9:
        event["occurred_at"] = "1970-01-01T00:00:00Z"
    else:
        behind = MAX_LATENESS_DAYS * DAY_MS + MINUTE_MS + g.rng.randrange(50 * 365 * DAY_MS)
        event["occurred_at"] = _iso(rec - behind)
    return json.dumps(event), "occurred_at_too_old"


def _outside_day(
    g: _Generator, number: int, event: dict[str, Any], occ: int, rec: int
) -> tuple[str, str]:
    tolerance = ARRIVAL_DAY_TOLERANCE_HOURS * HOUR_MS
    start = _epoch_ms(MAIN_DAY)
    variant = number % 6
    if variant == 0:
        received = start - tolerance - g.rng.randrange(1, 30 * DAY_MS)
    elif variant == 1:
        received = start + DAY_MS + tolerance + g.rng.randrange(0, 30 * DAY_MS)
    elif variant == 2:
        received = start - tolerance - 1  # just outside
    elif variant == 3:
        received = start + DAY_MS + tolerance  # the end is exclusive
    elif variant == 4:
        received = 0  # 1970
    else:
        received = _epoch_ms(date(2099, 1, 1))
    event["received_at"] = _iso(received)
    event["occurred_at"] = _iso(received - 500)
    return json.dumps(event), "received_at_outside_file_day"


def _without_zone(
    g: _Generator, number: int, event: dict[str, Any], occ: int, rec: int
) -> tuple[str, str]:
    name, instant = (("occurred_at", occ), ("received_at", rec))[number % 2]
    text = _iso(instant, digits=(0, 3, 6, 9)[(number // 2) % 4], zone="")
    variant = (number // 8) % 3
    if variant == 1:
        text = text.replace("T", " ")
    elif variant == 2:
        text = text[:16]  # no seconds
    event[name] = text
    return json.dumps(event), f"{name}_without_time_zone"


IMPOSSIBLE_ZONES = ("+24:00", "+99:00", "-25:00", "+05:60", "+0530", "+05", "+5:30", " UTC", "z")


def _impossible_offset(
    g: _Generator, number: int, event: dict[str, Any], occ: int, rec: int
) -> tuple[str, str]:
    name, instant = (("occurred_at", occ), ("received_at", rec))[number % 2]
    event[name] = _iso(instant, zone=IMPOSSIBLE_ZONES[(number // 2) % len(IMPOSSIBLE_ZONES)])
    return json.dumps(event), f"invalid_{name}"


INVALID_TIMESTAMP_LITERALS = (
    '"2026-13-01T00:00:00Z"',
    '"2026-02-30T00:00:00Z"',
    '"2026-10-03T25:00:00Z"',
    '"2026-10-03T23:59:60Z"',
    '"2026-10-03"',
    '"yesterday"',
    '""',
    "1790000000",
    '"10/03/2026 01:00:00 +00:00"',
)


def _invalid_timestamp(
    g: _Generator, number: int, event: dict[str, Any], occ: int, rec: int
) -> tuple[str, str]:
    name = ("occurred_at", "received_at")[number % 2]
    literal = INVALID_TIMESTAMP_LITERALS[(number // 2) % len(INVALID_TIMESTAMP_LITERALS)]
    return _with_literal(event, (name,), literal), f"invalid_{name}"


def _late_and_skewed(g: _Generator, count: int) -> None:
    for number in range(count):
        event, hour, _, rec = g.event()
        if number % 4 == 3:
            occ = rec + g.rng.randrange(0, MAX_CLOCK_SKEW_MINUTES * MINUTE_MS)
        else:
            occ = rec - HOUR_MS - g.rng.randrange((MAX_LATENESS_DAYS - 1) * DAY_MS - HOUR_MS)
        event["occurred_at"] = _iso(occ)
        g.accepted("late_and_skewed", event, hour, occ, rec)


VALID_OFFSETS_MINUTES = (
    0,
    60,
    120,
    330,
    345,
    -210,
    -480,
    540,
    -720,
    840,
    23 * 60 + 59,
    -(23 * 60 + 59),
)


def _non_utc_offsets(g: _Generator, count: int) -> None:
    for number in range(count):
        event, hour, occ, rec = g.event()
        digits = (0, 1, 3, 6, 9)[number % 5]
        if digits == 0:
            occ -= occ % 1000
        elif digits == 1:
            occ -= occ % 100
        for name, instant in (("occurred_at", occ), ("received_at", rec)):
            if name == "received_at" and number % 3 == 0:
                continue  # only occurred_at
            offset = g.rng.choice(VALID_OFFSETS_MINUTES)
            text = _iso(
                instant, offset_minutes=offset, digits=digits if name == "occurred_at" else 3
            )
            if offset == 0 and number % 2:
                text = text[:-1] + g.rng.choice(["+00:00", "-00:00"])
            event[name] = text
        g.accepted("non_utc_offsets", event, hour, occ, rec)


def _crlf_line_end(g: _Generator, count: int) -> None:
    for _ in range(count):
        event, hour, occ, rec = g.event(byte_level=True)
        g.accepted("crlf_line_end", event, hour, occ, rec).body += b"\r"


def _unicode_text(g: _Generator, count: int) -> None:
    texts = ("édition", "agent ✓", "日本語のチャット", "rocket 🚀", "Ω≈ç√")
    for number in range(count):
        event, hour, occ, rec = g.event()
        event["properties"]["request_kind"] = texts[number % len(texts)]
        g.accepted("unicode_text", event, hour, occ, rec).body = json.dumps(
            event, ensure_ascii=False
        ).encode()


def _trailing_comma(g: _Generator, count: int) -> None:
    for _ in range(count):
        event, hour, occ, rec = g.event()
        g.accepted("trailing_comma", event, hour, occ, rec).body = (
            json.dumps(event)[:-2] + ",}}"
        ).encode()


LINE_GENERATORS: dict[str, Callable[[_Generator, int], None]] = {
    "invalid_json": _invalid_json,
    "not_a_json_object": _not_a_json_object,
    "non_utf8": _non_utf8,
    "control_bytes": _control_bytes,
    "empty_line": _empty_line,
    "line_too_long": _line_too_long,
    "string_tokens": _string_tokens,
    "float_tokens": _float_tokens,
    "non_numeric_tokens": _non_numeric_tokens,
    "negative_tokens": _negative_tokens,
    "huge_tokens": _huge_tokens,
    "tokens_beyond_64_bits": _tokens_beyond_64_bits,
    "nan_infinity": _nan_infinity,
    "missing_ids": _missing_ids,
    "invalid_ids": _invalid_ids,
    "missing_timestamps": _missing_timestamps,
    "missing_fields": _missing_fields,
    "tool_calls": _tool_calls,
    "unknown_event_type": _unknown_event_type,
    "unknown_customer": _unknown_customer,
    "exact_duplicate": _exact_duplicate,
    "conflicting_duplicate": _conflicting_duplicate,
    "copies_out_of_order": _copies_out_of_order,
    "cross_day_copies": _cross_day_copies,
    "future_timestamps": _timestamp_kind("future_timestamps", _future),
    "ancient_timestamps": _timestamp_kind("ancient_timestamps", _ancient),
    "received_outside_day": _timestamp_kind("received_outside_day", _outside_day),
    "late_and_skewed": _late_and_skewed,
    "without_time_zone": _timestamp_kind("without_time_zone", _without_zone),
    "non_utc_offsets": _non_utc_offsets,
    "impossible_offsets": _timestamp_kind("impossible_offsets", _impossible_offset),
    "invalid_timestamps": _timestamp_kind("invalid_timestamps", _invalid_timestamp),
    "crlf_line_end": _crlf_line_end,
    "unicode_text": _unicode_text,
    "trailing_comma": _trailing_comma,
}


# --- writing the corpus -----------------------------------------------------------------------


def build_corpus(
    raw_dir: Path, *, scale: str, seed: int = SEED, instances: int | None = None
) -> Corpus:
    """Write the Stripe export and the usage files of ``DAYS`` under ``raw_dir``; ``instances``
    of each line kind (by default the scale's)."""
    g = _Generator(seed, scale)
    instances = INSTANCES_BY_SCALE[scale] if instances is None else instances
    _valid(g, instances * VALID_LINES_PER_INSTANCE)
    for make in LINE_GENERATORS.values():
        make(g, instances)
    for day, hours, count in (
        (NEXT_DAY, NEXT_DAY_HOURS, instances // 2),
        (FAILURE_DAY, FAILURE_DAY_HOURS, FAILURE_DAY_LINES),
    ):
        for _ in range(count):
            event, hour, occ, rec = g.event(day, g.rng.choice(hours))
            g.accepted("valid", event, hour, occ, rec, day=day)
    for hour in NO_FINAL_NEWLINE_HOURS:  # a last line that is not empty, placed last
        event, _, occ, rec = g.event(hour=hour)
        g.accepted("no_final_newline", event, hour, occ, rec).order_ms = 2**62

    corpus = Corpus(
        seed=seed,
        scale=scale,
        raw_dir=raw_dir,
        customers=g.customers,
        unknown_customers=g.unknown_customers,
        lines=g.lines,
    )
    corpus.growth = _growth_lines(g, count=int(instances * GROWTH_LINES_SHARE))
    corpus.partial_writes = [
        _partial_write_lines(g, variant) for variant in range(FILE_VARIANTS_BY_SCALE[scale])
    ]
    corpus.rng = random.Random(g.rng.getrandbits(64))
    _write_stripe_export(raw_dir / "stripe", g.customers)

    by_file: dict[tuple[date, int], list[tuple[int, int, Line]]] = defaultdict(list)
    for index, line in enumerate(corpus.lines):
        by_file[(line.day, line.hour)].append((line.order_ms, index, line))
    for (day, hour), entries in sorted(by_file.items()):
        entries.sort(key=lambda entry: (entry[0], entry[1]))
        relative = f"date={day.isoformat()}/hour={hour:02d}/{USAGE_FILE_NAME}"
        for number, (_, _, line) in enumerate(entries, start=1):
            line.source_file, line.line_number = relative, number
        body = b"\n".join(line.body for _, _, line in entries)
        if not (day == MAIN_DAY and hour in NO_FINAL_NEWLINE_HOURS):
            body += b"\n"
        else:
            corpus.file_kinds["no_final_newline"].append(relative)
        _write_file(
            corpus,
            relative,
            gzip.compress(body, compresslevel=GZIP_LEVEL, mtime=0),
            lines=_count_lines(body),
        )

    for name in EMPTY_FILE_NAMES:
        relative = f"date={MAIN_DAY.isoformat()}/{name}"
        _write_file(
            corpus, relative, gzip.compress(b"", compresslevel=GZIP_LEVEL, mtime=0), lines=0
        )
        corpus.file_kinds["empty_file"].append(relative)

    original = f"date={MAIN_DAY.isoformat()}/hour={DELIVERED_TWICE_HOUR:02d}/{USAGE_FILE_NAME}"
    original_lines = [line for line in corpus.lines if line.source_file == original]
    for name in DELIVERED_AGAIN_AS:
        relative = f"date={MAIN_DAY.isoformat()}/{name}"
        data = (corpus.usage_dir / original).read_bytes()
        _write_file(corpus, relative, data, lines=corpus.file_lines[original])
        corpus.file_kinds["file_delivered_twice"].append(relative)
        corpus.lines.extend(
            replace(
                line,
                kind="file_delivered_twice",
                source_file=relative,
                status=DUPLICATE if line.status == ACCEPTED else line.status,
            )
            for line in original_lines
        )
    return corpus


def _count_lines(body: bytes) -> int:
    """Lines as the contract counts them: every ``\\n`` ends one; a last one may lack it."""
    return body.count(b"\n") + (1 if body and not body.endswith(b"\n") else 0)


def _write_file(corpus: Corpus, relative: str, data: bytes, *, lines: int) -> None:
    path = corpus.usage_dir / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    corpus.file_lines[relative] = lines


def _write_stripe_export(stripe_dir: Path, customers: list[str]) -> None:
    """The customers the usage may name; the other exports with their header only."""
    stripe_dir.mkdir(parents=True, exist_ok=True)
    for table, columns in STRIPE_EXPORT_TABLES.items():
        with (stripe_dir / f"{table}.csv").open("w", newline="") as handle:
            writer = csv.writer(handle, lineterminator="\n")
            writer.writerow(columns)
            if table == "customers":
                writer.writerows(
                    [cid, f"billing{n}@example.com", f"Customer {n}", "usd", "1756684800", "{}"]
                    for n, cid in enumerate(customers)
                )


def _growth_lines(g: _Generator, *, count: int) -> list[Line]:
    """What the edge appends to ``GROWING_HOUR``'s file after it was first ingested."""
    originals = [line for line in g.lines if line.kind == "valid" and line.day == MAIN_DAY]
    before = len(g.lines)
    hour_end = _epoch_ms(MAIN_DAY) + (GROWING_HOUR + 1) * HOUR_MS
    for number in range(count):
        variant = number % 10
        if variant < 4:
            event, hour, occ, rec = g.event(hour=GROWING_HOUR)
            g.accepted("growing_file", event, hour, occ, rec)
        elif variant < 8:
            original = g.rng.choice(originals)
            event = json.loads(original.body)
            status = DUPLICATE if variant < 6 else QUARANTINED
            if status == QUARANTINED:
                event["properties"]["output_tokens"] += 1
            assert original.occurred_ms is not None and original.received_ms is not None
            received_ms = original.received_ms + g.rng.randrange(1, 5 * MINUTE_MS)
            event["received_at"] = _iso(received_ms)
            g.add(
                "growing_file",
                json.dumps(event),
                hour=GROWING_HOUR,
                order_ms=0,
                status=status,
                reason=CONFLICT if status == QUARANTINED else None,
                event=event,
                occurred_ms=original.occurred_ms,
                received_ms=received_ms,
            )
        elif variant == 8:
            event, hour, _, _ = g.event(hour=GROWING_HOUR)
            event["properties"]["input_tokens"] = -7
            g.quarantined("growing_file", json.dumps(event), "negative_input_tokens", hour=hour)
        else:
            event, hour, _, _ = g.event(hour=GROWING_HOUR)
            line = json.dumps(event)
            g.quarantined("growing_file", line[: len(line) // 2], "invalid_json", hour=hour)
    growth = g.lines[before:]
    del g.lines[before:]
    for line in growth:
        line.order_ms = hour_end  # appended: after every line already in the file
    return growth


def _partial_write_lines(g: _Generator, variant: int) -> list[Line]:
    before = len(g.lines)
    hour = FAILURE_DAY_HOURS[variant % len(FAILURE_DAY_HOURS)]
    for _ in range(PARTIAL_WRITE_LINES):
        event, _, occ, rec = g.event(FAILURE_DAY, hour)
        g.accepted("partial_write", event, hour, occ, rec, day=FAILURE_DAY)
    lines = g.lines[before:]
    del g.lines[before:]
    return lines


# --- running and checking ---------------------------------------------------------------------

CHECKED_LINES = (
    "each line: status and reason; a quarantined line's raw text; a parsed line's event_id "
    "and UTC times as stored"
)
CHECKED_FILES = {
    "empty_file": "usage_file_counts has the file with 0 lines",
    "file_delivered_twice": "each line of the copies as expected; the copies' counts",
    "no_final_newline": "raw lines = lines in the file; the last line's outcome",
    "growing_file": "after re-ingesting: each line (old and new) and the file's counts",
}
CHECKED_FAILING = (
    "IngestionError naming the file and saying to re-run; no other exception; every "
    "ingest table unchanged (rows hashed); the day ingests again once the file is "
    "removed (or complete)"
)
CHECKS: dict[str, str] = {
    "conservation_per_file": (
        "ingest.usage_file_counts per file: raw = lines in the file (counted from the bytes "
        "written) = accepted + duplicates + quarantined, each as expected"
    ),
    "conservation_per_day": (
        "ingest_usage_day's result per day = the day's sums of usage_file_counts = the sums "
        "expected"
    ),
    "quarantine_records": (
        "every quarantined line has a reason; invalid ones their raw text, conflicting "
        "duplicates their parsed fields (status conflict)"
    ),
    "no_crash": "every ingest returned, or raised IngestionError for a failing file only",
    "order_and_reruns": (
        "the three days re-ingested in reverse order: no row of any ingest table changes"
    ),
}


@dataclass
class KindResult:
    """One row of the harness's table: a kind of bad input, or a whole-corpus check."""

    name: str
    injected: str
    outcome: str
    how_many: str
    checked: str
    problems: list[str]

    @property
    def passed(self) -> bool:
        return not self.problems


@dataclass
class BadInputRun:
    scale: str
    seed: int
    kinds: list[KindResult]
    checks: list[KindResult]
    raw_lines: int
    files: int
    outcomes: dict[str, int]
    seconds: dict[str, float]
    ingests: int

    def result(self, name: str) -> KindResult:
        return next(r for r in (*self.kinds, *self.checks) if r.name == name)

    @property
    def passed(self) -> bool:
        return all(r.passed for r in (*self.kinds, *self.checks))


class _Problems:
    """Problems per kind or check, each message kept once, at most ``MAX_EXAMPLES`` shown."""

    MAX_EXAMPLES = 5

    def __init__(self) -> None:
        self.messages: dict[str, list[str]] = defaultdict(list)
        self.counts: Counter[str] = Counter()

    def add(self, name: str, message: str, *, first: bool = False) -> None:
        """Keep ``message`` once; ``first`` puts it before the others (a failed day)."""
        if message in self.messages[name]:
            return
        self.counts[name] += 1
        if first:
            self.messages[name].insert(0, message)
            del self.messages[name][self.MAX_EXAMPLES :]
        elif len(self.messages[name]) < self.MAX_EXAMPLES:
            self.messages[name].append(message)

    def of(self, name: str) -> list[str]:
        messages = list(self.messages.get(name, []))
        if self.counts[name] > len(messages):
            messages.append(f"… {self.counts[name] - len(messages)} more")
        return messages


def run_bad_input(work_dir: Path, *, scale: str, seed: int = SEED) -> BadInputRun:
    """Build the corpus under ``work_dir``, ingest it, inject the failures, check everything."""
    seconds: dict[str, float] = {}
    started = time.perf_counter()
    shutil.rmtree(work_dir / "raw", ignore_errors=True)
    (work_dir / "warehouse.duckdb").unlink(missing_ok=True)
    corpus = build_corpus(work_dir / "raw", scale=scale, seed=seed)
    seconds["generate"] = time.perf_counter() - started
    problems = _Problems()
    conn = duckdb.connect(str(work_dir / "warehouse.duckdb"), config=DUCKDB_CONFIG)
    try:
        load_stripe_exports(conn, stripe_dir=corpus.raw_dir / "stripe")
        session = _Session(conn, corpus, problems)

        step = time.perf_counter()
        for day in DAYS:
            session.ingest(day)
        seconds["ingest"] = time.perf_counter() - step
        session.check("first ingestion")
        if problems.counts["no_crash"]:
            # A day failed: every line kind alone, to tell which kinds fail a day.
            step = time.perf_counter()
            for kind in LINE_KINDS:
                _ingest_alone(work_dir / "alone", corpus, kind.name, problems)
            seconds["kinds alone"] = time.perf_counter() - step

        step = time.perf_counter()
        session.grow_file()
        session.ingest(MAIN_DAY)
        session.check("after the file grew")
        seconds["growing file"] = time.perf_counter() - step

        step = time.perf_counter()
        session.inject_failing_files()
        session.check("after the failing files")
        seconds["failing files"] = time.perf_counter() - step

        step = time.perf_counter()
        before = session.snapshot()
        for day in reversed(DAYS):
            session.ingest(day)
        if session.snapshot() != before:
            problems.add("order_and_reruns", "re-ingesting the days in reverse order changed rows")
        session.check("re-run in reverse order")
        seconds["re-runs"] = time.perf_counter() - step
    finally:
        conn.close()
    seconds["total"] = time.perf_counter() - started
    return _summarise(corpus, problems, session, seconds)


class _Session:
    """One warehouse, the corpus it holds, and the last result of each day's ingest."""

    def __init__(
        self,
        conn: duckdb.DuckDBPyConnection,
        corpus: Corpus,
        problems: _Problems,
        *,
        owner: str | None = None,
    ) -> None:
        self.conn = conn
        self.corpus = corpus
        self.problems = problems
        # When set, every problem is this kind's (a kind ingested alone).
        self.owner = owner
        self.results: dict[date, IngestionResult] = {}
        self.failing_files: Counter[str] = Counter()
        self.ingests = 0
        self.registered_lines = 0  # corpus lines already in the temp table expected_lines

    def problem(self, name: str, message: str, *, first: bool = False) -> None:
        self.problems.add(self.owner or name, message, first=first)

    def ingest(self, day: date) -> IngestionResult | None:
        self.ingests += 1
        try:
            result = ingest_usage_day(
                self.conn, raw_usage_dir=self.corpus.usage_dir, arrival_date=day
            )
        except Exception as error:  # any failure of a day without a failing file is a finding
            self.problem(
                "no_crash",
                f"{'alone: ' if self.owner else ''}ingesting {day} raised "
                f"{type(error).__name__}: {error}",
                first=True,
            )
            return None
        self.results[day] = result
        return result

    def snapshot(self) -> tuple[Any, ...]:
        """Every ingest table, hashed: any changed, added or removed row changes it."""
        row = self.conn.execute(
            """
            select
                (select count(*) || ':' || coalesce(sum(hash(source_file, line_number, status,
                        event_id, content_hash, arrival_date)), 0) from ingest.usage_event_lines),
                (select count(*) || ':' || coalesce(sum(hash(source_file, line_number, reason,
                        raw_line, arrival_date)), 0) from ingest.invalid_usage_lines),
                (select count(*) || ':' || coalesce(sum(hash(source_file, raw_lines, file_bytes,
                        arrival_date)), 0) from ingest.usage_files),
                (select count(*) || ':' || coalesce(sum(hash(arrival_date, usage_date)), 0)
                 from ingest.partition_usage_dates)
            """
        ).fetchall()[0]
        return tuple(row)

    # --- the file kinds that change the corpus after the first ingestion ---

    def grow_file(self) -> None:
        """Append a second gzip member to ``GROWING_HOUR``'s file, as a writer that reopens
        the file in append mode does."""
        relative = f"date={MAIN_DAY.isoformat()}/hour={GROWING_HOUR:02d}/{USAGE_FILE_NAME}"
        first = self.corpus.file_lines[relative]
        for number, line in enumerate(self.corpus.growth, start=first + 1):
            line.source_file, line.line_number = relative, number
        body = b"".join(line.body + b"\n" for line in self.corpus.growth)
        with (self.corpus.usage_dir / relative).open("ab") as handle:
            handle.write(gzip.compress(body, compresslevel=GZIP_LEVEL, mtime=0))
        self.corpus.file_lines[relative] = first + len(self.corpus.growth)
        self.corpus.lines.extend(self.corpus.growth)
        self.corpus.file_kinds["growing_file"].append(relative)

    def inject_failing_files(self) -> None:
        """Each failing kind's variants, one at a time, on ``FAILURE_DAY``."""
        variants = FILE_VARIANTS_BY_SCALE[self.corpus.scale]
        for kind in (k for k in FILE_KINDS if k.level == "failing file"):
            for variant in range(1 if kind.name == "zero_byte_file" else variants):
                self._inject(kind.name, variant)

    def _inject(self, kind: str, variant: int) -> None:
        rng = self.corpus.rng
        hour = FAILURE_DAY_HOURS[variant % len(FAILURE_DAY_HOURS)]
        relative = f"date={FAILURE_DAY.isoformat()}/hour={hour:02d}/{kind}-{variant}.ndjson.gz"
        path = self.corpus.usage_dir / relative
        complete_lines = self.corpus.partial_writes[variant] if kind == "partial_write" else []
        bad, complete = _failing_file_bytes(kind, variant, rng, complete_lines)
        before = self.snapshot()
        path.write_bytes(bad)
        self.failing_files[kind] += 1
        self.ingests += 1
        try:
            ingest_usage_day(
                self.conn, raw_usage_dir=self.corpus.usage_dir, arrival_date=FAILURE_DAY
            )
        except IngestionError as error:
            message = str(error)
            if relative not in message:
                self.problem(kind, f"{relative}: the error does not name the file: {message}")
            if "re-run" not in message:
                self.problem(kind, f"{relative}: the error does not say what to do: {message}")
        except Exception as error:
            self.problem(kind, f"{relative}: {type(error).__name__} instead of IngestionError")
        else:
            self.problem(kind, f"{relative}: ingested without an error")
        if self.snapshot() != before:
            self.problem(kind, f"{relative}: the warehouse changed although the day failed")
        if complete is None:
            path.unlink()
        else:
            path.write_bytes(complete)
            for number, line in enumerate(complete_lines, start=1):
                line.source_file, line.line_number = relative, number
            self.corpus.lines.extend(complete_lines)
            self.corpus.file_lines[relative] = len(complete_lines)
        if self.ingest(FAILURE_DAY) is None:
            self.problem(kind, f"{relative}: the day did not ingest once the file was fixed")

    # --- checks ---

    def check(self, stage: str) -> None:
        """Every line, file and day against what the corpus says; problems by kind or check."""
        conn = self.conn
        self.registered_lines = _register_expected(conn, self.corpus, self.registered_lines)
        conn.execute(
            """
            create or replace temp table actual_lines as
            select source_file, line_number,
                   case when status = 'conflict' then 'quarantined' else status end as status,
                   case when status = 'conflict' then 'conflicting_duplicate' end as reason,
                   event_id, epoch_ms(occurred_at) as occurred_ms,
                   epoch_ms(received_at) as received_ms, null as raw_line, false as is_invalid
            from ingest.usage_event_lines
            union all
            select source_file, line_number, 'quarantined', reason, null, null, null, raw_line,
                   true
            from ingest.invalid_usage_lines
            """
        )
        mismatches = conn.execute(
            """
            with actual as (
                select source_file, line_number, count(*) as copies, any_value(status) as status,
                       any_value(reason) as reason, any_value(event_id) as event_id,
                       any_value(occurred_ms) as occurred_ms,
                       any_value(received_ms) as received_ms, any_value(raw_line) as raw_line,
                       bool_or(is_invalid) as is_invalid
                from actual_lines group by all
            )
            select coalesce(e.kind, 'conservation_per_file'), source_file, line_number,
                   e.status, e.reason, a.status, a.reason, a.copies,
                   e.status is not distinct from a.status
                       and e.reason is not distinct from a.reason as outcome_ok,
                   e.event_id, a.event_id, e.occurred_ms, a.occurred_ms, e.received_ms,
                   a.received_ms
            from expected_lines e full outer join actual a using (source_file, line_number)
            where e.kind is null or a.copies is distinct from 1
               or e.status is distinct from a.status or e.reason is distinct from a.reason
               or (not a.is_invalid and (e.event_id is distinct from a.event_id
                                         or e.occurred_ms is distinct from a.occurred_ms
                                         or e.received_ms is distinct from a.received_ms))
               or (a.is_invalid and e.raw_text is distinct from a.raw_line)
            order by 2, 3
            """
        ).fetchall()
        for kind, source_file, line_number, *values in mismatches:
            (e_status, e_reason, a_status, a_reason, copies, outcome_ok, *ids) = values
            where = f"{stage}: {source_file}:{line_number}"
            if copies is None:
                self.problem(kind, f"{where}: missing from the ingest tables")
            elif copies != 1:
                self.problem(kind, f"{where}: in the ingest tables {copies} times")
            elif e_status is None:
                self.problem(kind, f"{where}: a line that was not written")
            elif not outcome_ok:
                self.problem(
                    kind,
                    f"{where}: {a_status} {a_reason or ''} instead of {e_status} "
                    f"{e_reason or ''}".replace("  ", " "),
                )
            elif a_status == QUARANTINED and a_reason != CONFLICT:
                self.problem(kind, f"{where}: its raw text is not kept as it was")
            else:
                self.problem(
                    kind, f"{where}: stored id/occurred/received {ids[1::2]} instead of {ids[::2]}"
                )
        self._check_files(stage)
        self._check_days(stage)
        self._check_quarantine(stage)

    def _check_files(self, stage: str) -> None:
        kind_of = {f: k for k, files in self.corpus.file_kinds.items() for f in files}
        rows = self.conn.execute(
            """
            with expected as (
                select f.source_file, f.raw_lines,
                       count(e.line_number) filter (where e.status = 'accepted') as accepted,
                       count(e.line_number) filter (where e.status = 'duplicate') as duplicates,
                       count(e.line_number) filter (where e.status = 'quarantined')
                           as quarantined,
                       count(e.line_number) as planned
                from expected_files f left join expected_lines e using (source_file)
                group by all
            )
            select source_file, e.raw_lines, e.planned, e.accepted, e.duplicates, e.quarantined,
                   c.raw_lines, c.accepted_lines, c.duplicate_lines, c.quarantined_lines
            from expected e full outer join ingest.usage_file_counts c using (source_file)
            where e.raw_lines is distinct from c.raw_lines or e.planned <> e.raw_lines
               or e.accepted is distinct from c.accepted_lines
               or e.duplicates is distinct from c.duplicate_lines
               or e.quarantined is distinct from c.quarantined_lines
               or c.raw_lines <> c.accepted_lines + c.duplicate_lines + c.quarantined_lines
            """
        ).fetchall()
        for source_file, raw, planned, *counts in rows:
            message = (
                (
                    f"{stage}: {source_file}: expected {counts[:3]} of {raw} lines "
                    f"({planned} planned), usage_file_counts {counts[3:]}"
                )
                .replace("[", "(")
                .replace("]", ")")
            )
            self.problem("conservation_per_file", message)
            if source_file in kind_of:
                self.problem(kind_of[source_file], message)

    def _check_days(self, stage: str) -> None:
        for day in DAYS:
            expected = self.conn.execute(
                """
                select coalesce(sum(raw_lines), 0),
                       (select count(*) filter (where status = 'accepted'),
                        from expected_lines where source_file like ?),
                       (select count(*) filter (where status = 'duplicate'),
                        from expected_lines where source_file like ?),
                       (select count(*) filter (where status = 'quarantined'),
                        from expected_lines where source_file like ?)
                from expected_files where source_file like ?
                """,
                [f"date={day.isoformat()}/%"] * 4,
            ).fetchall()[0]
            counted = self.conn.execute(
                "select coalesce(sum(raw_lines), 0), coalesce(sum(accepted_lines), 0), "
                "coalesce(sum(duplicate_lines), 0), coalesce(sum(quarantined_lines), 0) "
                "from ingest.usage_file_counts where arrival_date = ?",
                [day],
            ).fetchall()[0]
            result = self.results.get(day)
            if result is None and not any(
                name.startswith(f"date={day.isoformat()}/") for name in self.corpus.file_lines
            ):
                continue  # a day without files, not ingested
            reported = (
                None
                if result is None
                else (
                    result.raw_lines,
                    result.accepted_lines,
                    result.duplicate_lines,
                    result.quarantined_lines,
                )
            )
            if not (tuple(expected) == tuple(counted) == reported):
                self.problem(
                    "conservation_per_day",
                    f"{stage}: {day}: expected {tuple(expected)}, usage_file_counts "
                    f"{tuple(counted)}, ingest_usage_day {reported}",
                )

    def _check_quarantine(self, stage: str) -> None:
        row = self.conn.execute(
            """
            select count(*) filter (where reason is null or reason = ''),
                   count(*) filter (where reason <> 'conflicting_duplicate'
                                    and raw_line is null and (source_file, line_number) not in
                                    (select (source_file, line_number) from expected_lines
                                     where raw_text is null)),
                   (select count(*) from ingest.quarantined_usage_lines q
                    where reason = 'conflicting_duplicate' and not exists (
                        select 1 from ingest.usage_event_lines l
                        where l.source_file = q.source_file
                          and l.line_number = q.line_number and l.status = 'conflict'))
            from ingest.quarantined_usage_lines
            """
        ).fetchall()[0]
        without_reason, without_text, conflicts_without_fields = row
        for count, what in (
            (without_reason, "quarantined lines without a reason"),
            (without_text, "invalid lines without their raw text"),
            (conflicts_without_fields, "conflicting duplicates without their parsed line"),
        ):
            if count:
                self.problem("quarantine_records", f"{stage}: {count} {what}")


def _ingest_alone(work_dir: Path, corpus: Corpus, kind: str, problems: _Problems) -> None:
    """The kind's lines only (in the order they have in the corpus), in a warehouse of their
    own: a line that fails its day shows under its kind, not under every kind of the day."""
    lines = sorted(
        (replace(line) for line in corpus.lines if line.kind == kind),
        key=lambda line: (line.source_file, line.line_number),
    )
    alone = Corpus(
        seed=corpus.seed,
        scale=corpus.scale,
        raw_dir=work_dir / kind,
        customers=corpus.customers,
        unknown_customers=corpus.unknown_customers,
        lines=lines,
    )
    shutil.rmtree(alone.raw_dir, ignore_errors=True)
    by_file: dict[str, list[Line]] = defaultdict(list)
    for line in lines:
        by_file[line.source_file].append(line)
    for relative, file_lines in by_file.items():
        for number, line in enumerate(file_lines, start=1):
            line.line_number = number
        body = b"".join(line.body + b"\n" for line in file_lines)
        _write_file(
            alone,
            relative,
            gzip.compress(body, compresslevel=GZIP_LEVEL, mtime=0),
            lines=len(file_lines),
        )
    conn = duckdb.connect(config=DUCKDB_CONFIG)
    try:
        load_stripe_exports(conn, stripe_dir=corpus.raw_dir / "stripe")
        session = _Session(conn, alone, problems, owner=kind)
        for day in sorted({line.day for line in lines}):
            session.ingest(day)
        session.check("alone")
    finally:
        conn.close()
    shutil.rmtree(alone.raw_dir, ignore_errors=True)


def _register_expected(conn: duckdb.DuckDBPyConnection, corpus: Corpus, registered: int) -> int:
    """Add the corpus's lines from ``registered`` on to the temp table ``expected_lines`` (lines
    only ever get added) and replace ``expected_files``; return how many lines it holds."""
    import pandas as pd

    new = corpus.lines[registered:]
    lines = pd.DataFrame(
        {
            "kind": [line.kind for line in new],
            "source_file": [line.source_file for line in new],
            "line_number": pd.array([line.line_number for line in new], dtype="Int64"),
            "status": [line.status for line in new],
            "reason": [line.reason for line in new],
            "event_id": [line.event_id for line in new],
            "occurred_ms": pd.array([line.occurred_ms for line in new], dtype="Int64"),
            "received_ms": pd.array([line.received_ms for line in new], dtype="Int64"),
            "raw_text": [_raw_text(line) for line in new],
        }
    )
    files = pd.DataFrame(
        {
            "source_file": list(corpus.file_lines),
            "raw_lines": list(corpus.file_lines.values()),
        }
    )
    conn.register("expected_lines_frame", lines)
    conn.register("expected_files_frame", files)
    try:
        if registered == 0:
            conn.execute(
                "create or replace temp table expected_lines as "
                "select * from expected_lines_frame limit 0"
            )
        conn.execute("insert into expected_lines select * from expected_lines_frame")
        conn.execute(
            "create or replace temp table expected_files as select * from expected_files_frame"
        )
    finally:
        conn.unregister("expected_lines_frame")
        conn.unregister("expected_files_frame")
    return len(corpus.lines)


def _raw_text(line: Line) -> str | None:
    """What ``invalid_usage_lines.raw_line`` must hold: the line as text, bytes that are not
    UTF-8 as ``\\xNN``, at most 4,096 characters; NULL for an empty line."""
    if line.status != QUARANTINED or line.reason == CONFLICT or not line.body:
        return None
    return line.body.decode("utf-8", "backslashreplace")[:4096]


def _failing_file_bytes(
    kind: str, variant: int, rng: random.Random, complete_lines: list[Line]
) -> tuple[bytes, bytes | None]:
    """(the bad file, the complete file that replaces it, or None to remove it)."""
    body = "".join(
        json.dumps({"event_id": f"evt_failing_{kind}_{variant}_{n}", "n": n}) + "\n"
        for n in range(200)
    ).encode()
    whole = gzip.compress(body, compresslevel=GZIP_LEVEL, mtime=0)
    if kind == "truncated_gzip":
        return whole[: rng.randrange(10, len(whole) - 1)], None
    if kind == "corrupt_gzip":
        if variant % 3 == 0:  # stored: the changed byte reads as other text, without an error
            stored = gzip.compress(body, compresslevel=0, mtime=0)
            position = 10 + 5 + rng.randrange(len(body))
            while stored[position : position + 1] in (b"\n", b"7"):
                position += 1
            return stored[:position] + b"7" + stored[position + 1 :], None
        while True:
            position = (
                len(whole) - 8 + rng.randrange(4)  # the CRC
                if variant % 3 == 1
                else rng.randrange(10, len(whole) - 8)
            )
            corrupt = bytearray(whole)
            corrupt[position] ^= 1 << rng.randrange(8)
            try:
                if gzip.decompress(bytes(corrupt)) == body:
                    continue  # an ignored bit (padding): not corrupt after all
            except (EOFError, OSError, zlib.error):
                pass
            return bytes(corrupt), None
    if kind == "not_gzip":
        import bz2

        return [body, rng.randbytes(4096), bz2.compress(body)][variant % 3], None
    if kind == "zero_byte_file":
        return b"", None
    if kind == "partial_write":
        complete_body = b"".join(line.body + b"\n" for line in complete_lines)
        writer = zlib.compressobj(6, zlib.DEFLATED, 31)
        middle = len(complete_body) // 2 + rng.randrange(len(complete_body) // 4)
        partial = writer.compress(complete_body[:middle]) + writer.flush(zlib.Z_SYNC_FLUSH)
        return partial, partial + writer.compress(complete_body[middle:]) + writer.flush()
    raise ValueError(f"not a failing file kind: {kind}")


def _summarise(
    corpus: Corpus, problems: _Problems, session: _Session, seconds: dict[str, float]
) -> BadInputRun:
    lines_by_kind = Counter(line.kind for line in corpus.lines)
    files_by_kind = {kind: len(files) for kind, files in corpus.file_kinds.items()}
    kinds = []
    for kind in (*LINE_KINDS, *FILE_KINDS):
        if kind.level == "line":
            how_many, checked = f"{lines_by_kind[kind.name]:,} lines", CHECKED_LINES
        elif kind.level == "file":
            how_many = _files(files_by_kind.get(kind.name, 0))
            if lines_by_kind[kind.name]:
                how_many += f", {lines_by_kind[kind.name]:,} lines"
            checked = CHECKED_FILES[kind.name] + "; " + CHECKED_LINES
        else:
            how_many = _files(session.failing_files[kind.name])
            checked = CHECKED_FAILING
        kinds.append(
            KindResult(
                name=kind.name,
                injected=kind.injected,
                outcome=kind.outcome,
                how_many=how_many,
                checked=checked,
                problems=problems.of(kind.name),
            )
        )
    outcomes = Counter(
        line.reason if line.status == QUARANTINED else line.status for line in corpus.lines
    )
    checks = [
        KindResult(
            name=name,
            injected="",
            outcome="",
            how_many=f"{_files(len(corpus.file_lines))}, {sum(corpus.file_lines.values()):,} lines",
            checked=checked,
            problems=problems.of(name),
        )
        for name, checked in CHECKS.items()
    ]
    return BadInputRun(
        scale=corpus.scale,
        seed=corpus.seed,
        kinds=kinds,
        checks=checks,
        raw_lines=sum(corpus.file_lines.values()),
        files=len(corpus.file_lines),
        outcomes=dict(outcomes),
        seconds=seconds,
        ingests=session.ingests,
    )


def _files(count: int) -> str:
    return f"{count} file" if count == 1 else f"{count} files"


def file_digests(raw_dir: Path) -> dict[str, str]:
    """Every file under ``raw_dir`` and a digest of its bytes (to compare two corpora)."""
    import hashlib

    return {
        path.relative_to(raw_dir).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(raw_dir.rglob("*"))
        if path.is_file()
    }
