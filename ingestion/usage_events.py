"""Ingest one arrival day of raw usage logs into the warehouse, losing nothing.

Every raw line ends in exactly one place:

- ``ingest.usage_event_lines`` when it parses and validates, with a dedup ``status``:
  ``accepted`` (the first copy of its ``event_id``), ``duplicate`` (a later copy with the same
  billed content: an edge retry) or ``conflict`` (a later copy with *different* content: it is
  quarantined as ``conflicting_duplicate`` and never billed);
- ``ingest.invalid_usage_lines`` with a ``reason`` when it does not.

"First" is decided by ``(received_at, source_file, line_number)`` over *all* days ever ingested,
not by the order in which partitions happen to run, so re-running or backfilling days in any
order converges to the same statuses. Re-running a day replaces that day's rows.

All parsing runs inside DuckDB (vectorised JSON functions over the raw lines), which is what keeps
ingestion close to the cost of a bare query over the same files (see ``bench/``). Only a file whose
lines DuckDB's CSV reader cannot split (bytes that are not UTF-8, carriage returns, …) is split in
Python. Every file is also decompressed in full in a background thread: its gzip CRC is checked
(DuckDB does not) and its lines are counted independently of DuckDB; a file that is not whole
fails its day with an error naming it.
"""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import duckdb

from crash_points import crash_point

# A model call carries a model and token counts; a tool call (a paid tool an agent used, such
# as a web search or a sandbox run) carries the tool and what it cost, in integer minor units.
KNOWN_EVENT_TYPES: tuple[str, ...] = ("model_call", "tool_call")
TOKEN_FIELDS: tuple[str, ...] = ("input_tokens", "output_tokens", "cache_read_tokens")
# What JSON counts as whitespace (but the line feed, which ends the line), as a SQL expression.
JSON_WHITESPACE = "' ' || chr(9) || chr(13)"
MAX_LINE_BYTES = 64 * 1024
MAX_TOKENS_PER_EVENT = 100_000_000
# A tool call's cost, in minor units (1,000,000.00 USD).
MAX_COST_MINOR_PER_EVENT = 100_000_000
MAX_EVENT_ID_CHARS = 128
# Events may arrive late, but not later than Stripe accepts meter events (35 days).
MAX_LATENESS_DAYS = 35
# The edge's clock may run a little ahead of the collector's.
MAX_CLOCK_SKEW_MINUTES = 5
# received_at must lie in the file's arrival day, give or take this much (hour files flush late).
ARRIVAL_DAY_TOLERANCE_HOURS = 6

GZIP_MAGIC = b"\x1f\x8b"
# Lines per insert when a file DuckDB's reader refuses is read in Python (bounds its memory).
PYTHON_READ_BATCH_LINES = 100_000

# RFC 3339 with a zone: "Z" or an offset of at most 23:59 (DuckDB applies any "+HH:MM" it is
# given, "+99:00" included, which would move the event by days).
TIMESTAMP_PATTERN = (
    r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,9})?(Z|[+-]([01]\d|2[0-3]):[0-5]\d)$"
)
# A timestamp that only lacks its zone (any other malformed one is invalid).
TIMESTAMP_WITHOUT_ZONE_PATTERN = r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?$"

SCHEMA_SQL = """
create schema if not exists ingest;
create table if not exists ingest.usage_files (
    arrival_date date not null,
    source_file varchar not null,
    raw_lines bigint not null,
    file_bytes bigint not null,
    primary key (source_file)
);
create table if not exists ingest.usage_event_lines (
    arrival_date date not null,
    source_file varchar not null,
    line_number bigint not null,
    event_id varchar not null,
    customer_id varchar not null,
    event_type varchar not null,
    occurred_at timestamp not null,
    received_at timestamp not null,
    usage_date date not null,
    model varchar,
    request_kind varchar,
    input_tokens bigint not null,
    output_tokens bigint not null,
    cache_read_tokens bigint not null,
    content_hash varchar not null,
    status varchar not null,
    tool varchar,
    cost_minor bigint not null default 0
);
-- Warehouses made before tool calls were accepted get their columns.
alter table ingest.usage_event_lines add column if not exists tool varchar;
alter table ingest.usage_event_lines add column if not exists cost_minor bigint default 0;
create table if not exists ingest.invalid_usage_lines (
    arrival_date date not null,
    source_file varchar not null,
    line_number bigint not null,
    event_id varchar,
    reason varchar not null,
    raw_line varchar
);
create table if not exists ingest.partition_usage_dates (
    arrival_date date not null,
    usage_date date not null
);
create or replace view ingest.accepted_usage_events as
    select * exclude (status) from ingest.usage_event_lines where status = 'accepted';
create or replace view ingest.quarantined_usage_lines as
    select arrival_date, source_file, line_number, event_id, reason, raw_line
    from ingest.invalid_usage_lines
    union all
    select arrival_date, source_file, line_number, event_id,
           'conflicting_duplicate',
           null
    from ingest.usage_event_lines where status = 'conflict';
create or replace view ingest.usage_file_counts as
    with line_counts as (
        select source_file,
               count(*) filter (where status = 'accepted') as accepted_lines,
               count(*) filter (where status = 'duplicate') as duplicate_lines,
               count(*) filter (where status = 'conflict') as conflict_lines
        from ingest.usage_event_lines group by source_file
    ),
    invalid_counts as (
        select source_file, count(*) as invalid_lines
        from ingest.invalid_usage_lines group by source_file
    )
    select f.arrival_date, f.source_file, f.raw_lines,
           coalesce(l.accepted_lines, 0) as accepted_lines,
           coalesce(l.duplicate_lines, 0) as duplicate_lines,
           coalesce(l.conflict_lines, 0) + coalesce(i.invalid_lines, 0) as quarantined_lines
    from ingest.usage_files f
    left join line_counts l using (source_file)
    left join invalid_counts i using (source_file);
"""


@dataclass(frozen=True)
class IngestionResult:
    """What one arrival day contributed, for run metadata and the CLI summary."""

    arrival_date: date
    files: int
    raw_lines: int
    accepted_lines: int
    duplicate_lines: int
    quarantined_lines: int
    usage_dates: tuple[date, ...]


class IngestionError(RuntimeError):
    """A whole file or day could not be read; nothing of that day was written."""


def ensure_schema(conn: duckdb.DuckDBPyConnection) -> None:
    conn.execute(SCHEMA_SQL)


def day_files(raw_usage_dir: Path, arrival_date: date) -> list[Path]:
    """The hour files of one arrival day, in a stable order."""
    day_dir = raw_usage_dir / f"date={arrival_date.isoformat()}"
    return sorted(day_dir.glob("hour=*/*.ndjson.gz"))


def _sql_string(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _raw_lines_sql(files: list[Path], raw_usage_dir: Path) -> str:
    """One union branch per file, so that ``line_number`` is the line's number in its file."""
    branches = []
    for path in files:
        relative = path.relative_to(raw_usage_dir).as_posix()
        branches.append(
            f"select {_sql_string(relative)} as source_file, ordinality as line_number, raw_line, "
            "true as is_utf8 "
            f"from read_csv({_sql_string(str(path))}, columns={{'raw_line': 'VARCHAR'}}, "
            "header=false, delim=chr(30), quote='', escape='', auto_detect=false, "
            f"new_line='\\n', max_line_size={MAX_LINE_BYTES * 16}) with ordinality"
        )
    return "\nunion all\n".join(branches)


def _load_raw_lines(
    conn: duckdb.DuckDBPyConnection, files: list[Path], raw_usage_dir: Path
) -> None:
    """Fill the temp table ``raw_lines``: every line of every file, numbered in its file.

    DuckDB's CSV reader splits the lines, but it refuses a whole file for one line it cannot
    split: bytes that are not UTF-8, a carriage return (CRLF line ends), the record separator
    it splits columns on, a line over its maximum size. One bad line must not stop the day, so
    the files are then read one by one and a file DuckDB refuses is read in Python instead
    (``_insert_lines_read_in_python``), which also names a file that is not readable gzip.
    Runs outside the day's transaction: a failed statement would abort it.
    """
    conn.execute(
        "create or replace temp table raw_lines "
        "(source_file varchar, line_number bigint, raw_line varchar, is_utf8 boolean)"
    )
    if not files:
        return
    try:
        conn.execute(f"insert into raw_lines {_raw_lines_sql(files, raw_usage_dir)}")
        return
    except duckdb.Error:
        pass
    for path in files:
        try:
            conn.execute(f"insert into raw_lines {_raw_lines_sql([path], raw_usage_dir)}")
        except duckdb.Error:
            _insert_lines_read_in_python(
                conn, path, source_file=path.relative_to(raw_usage_dir).as_posix()
            )


def _insert_lines_read_in_python(
    conn: duckdb.DuckDBPyConnection, path: Path, *, source_file: str
) -> None:
    """Split a gzip file on ``\\n`` as DuckDB's reader does (a leading BOM dropped, no line
    after a final newline, an empty line as NULL) and insert its lines into ``raw_lines``.

    A line that is not UTF-8 is kept with its bad bytes as ``\\xNN`` escapes and
    ``is_utf8 = false``: JSON text must be UTF-8, so it is quarantined as ``invalid_json``.
    """
    import pandas as pd

    _require_gzip_magic(path)
    batch: list[tuple[int, str | None, bool]] = []

    def flush() -> None:
        frame = pd.DataFrame(batch, columns=["line_number", "raw_line", "is_utf8"], dtype=object)
        frame.insert(0, "source_file", source_file)
        conn.register("python_read_lines", frame)
        try:
            conn.execute("insert into raw_lines select * from python_read_lines")
        finally:
            conn.unregister("python_read_lines")
        batch.clear()

    try:
        with gzip.open(path, "rb") as stream:
            for line_number, line in enumerate(stream, start=1):
                if line.endswith(b"\n"):
                    line = line[:-1]
                if line_number == 1 and line.startswith(b"\xef\xbb\xbf"):
                    line = line[3:]
                try:
                    batch.append((line_number, line.decode("utf-8") or None, True))
                except UnicodeDecodeError:
                    batch.append((line_number, line.decode("utf-8", "backslashreplace"), False))
                if len(batch) >= PYTHON_READ_BATCH_LINES:
                    flush()
    except (EOFError, OSError, zlib.error) as error:
        raise _truncated_file_error(path, error) from error
    if batch:
        flush()


def _classified_sql(arrival_date: date) -> str:
    """Extract typed fields from every raw line and name the first rule it breaks, if any.

    Each JSON field is extracted once into a column of its own and each costly test (a
    timestamp pattern, a token cast) computed once, before the ``CASE`` that picks the reason:
    the ``CASE`` tests every valid line against every rule. ``trim`` with a character list is
    slow (~1.7 µs a line), so it only runs on lines that are not JSON, the only ones that can
    be blank. A valid line also gets the content hash that tells an edge retry from a conflict.
    """
    day = _sql_string(arrival_date.isoformat())
    known_types = ", ".join(_sql_string(t) for t in KNOWN_EVENT_TYPES)
    token_columns = ",\n".join(
        f"            field_types[{i + 6}] as {field}_type, fields[{i + 6}] as {field}_text, "
        f"try_cast(fields[{i + 6}] as bigint) as {field}"
        for i, field in enumerate(TOKEN_FIELDS)
    )
    token_checks = "\n".join(
        _count_checks(field, MAX_TOKENS_PER_EVENT, event_type="model_call")
        for field in TOKEN_FIELDS
    )
    cost_checks = _count_checks("cost_minor", MAX_COST_MINOR_PER_EVENT, event_type="tool_call")
    return f"""
    with extracted as (
        select *,
            case when is_json then json_extract_string(raw_line, [
                '$.event_id', '$.customer_id', '$.event_type', '$.occurred_at', '$.received_at',
                '$.properties.input_tokens', '$.properties.output_tokens',
                '$.properties.cache_read_tokens', '$.properties.model',
                '$.properties.request_kind', '$.properties.tool',
                '$.properties.cost_minor']) end as fields,
            case when is_json then json_type(raw_line, [
                '$.event_id', '$.customer_id', '$.event_type', '$.occurred_at', '$.received_at',
                '$.properties.input_tokens', '$.properties.output_tokens',
                '$.properties.cache_read_tokens', '$.properties.tool',
                '$.properties.cost_minor']) end as field_types
        from (
            select *, is_utf8 and raw_line is not null and strlen(raw_line) <= {MAX_LINE_BYTES}
                      and json_valid(raw_line) as is_json
            from raw_lines
        )
    ),
    unpacked as (
        select source_file, line_number, raw_line, is_json,
            fields[1] as event_id, field_types[1] as event_id_type,
            fields[2] as customer_id, field_types[2] as customer_id_type,
            fields[3] as event_type, field_types[3] as event_type_type,
            fields[4] as occurred_at_text, field_types[4] as occurred_at_type,
            fields[5] as received_at_text, field_types[5] as received_at_type,
            fields[9] as model, fields[10] as request_kind,
            fields[11] as tool, field_types[9] as tool_type,
            field_types[10] as cost_minor_type, fields[12] as cost_minor_text,
            try_cast(fields[12] as bigint) as cost_minor,
{token_columns}
        from extracted
    ),
    typed as (
        select *,
            try_cast(occurred_at_text as timestamptz) at time zone 'UTC' as occurred_at,
            try_cast(received_at_text as timestamptz) at time zone 'UTC' as received_at,
            regexp_full_match(occurred_at_text, '{TIMESTAMP_PATTERN}') as occurred_at_zoned,
            regexp_full_match(received_at_text, '{TIMESTAMP_PATTERN}') as received_at_zoned
        from unpacked
    ),
    classified as (
        select *, case
            when raw_line is null
                 or case when is_json then false else trim(raw_line, {JSON_WHITESPACE}) = '' end
                then 'empty_line'
            when strlen(raw_line) > {MAX_LINE_BYTES} then 'line_too_long'
            when not is_json then 'invalid_json'
            when case when starts_with(raw_line, '{{') then false
                      else left(ltrim(raw_line, {JSON_WHITESPACE}), 1) <> '{{' end
                then 'not_a_json_object'
            when event_id_type is null then 'missing_event_id'
            when event_id_type <> 'VARCHAR' or event_id = ''
                 or strlen(event_id) > {MAX_EVENT_ID_CHARS} then 'invalid_event_id'
            when customer_id_type is null then 'missing_customer_id'
            when customer_id_type <> 'VARCHAR' or customer_id = '' then 'invalid_customer_id'
            when event_type_type is null then 'missing_event_type'
            when coalesce(event_type not in ({known_types}), true) then 'unknown_event_type'
            when occurred_at_type is null then 'missing_occurred_at'
            when occurred_at_type <> 'VARCHAR' or occurred_at is null then 'invalid_occurred_at'
            when not occurred_at_zoned
                 and regexp_full_match(occurred_at_text, '{TIMESTAMP_WITHOUT_ZONE_PATTERN}')
                then 'occurred_at_without_time_zone'
            when not occurred_at_zoned then 'invalid_occurred_at'
            when received_at_type is null then 'missing_received_at'
            when received_at_type <> 'VARCHAR' or received_at is null then 'invalid_received_at'
            when not received_at_zoned
                 and regexp_full_match(received_at_text, '{TIMESTAMP_WITHOUT_ZONE_PATTERN}')
                then 'received_at_without_time_zone'
            when not received_at_zoned then 'invalid_received_at'
            when received_at < cast({day} as timestamp)
                               - interval {ARRIVAL_DAY_TOLERANCE_HOURS} hour
              or received_at >= cast({day} as timestamp) + interval 1 day
                               + interval {ARRIVAL_DAY_TOLERANCE_HOURS} hour
                then 'received_at_outside_file_day'
            when occurred_at > received_at + interval {MAX_CLOCK_SKEW_MINUTES} minute
                then 'occurred_at_in_future'
            when occurred_at < received_at - interval {MAX_LATENESS_DAYS} day
                then 'occurred_at_too_old'
            when event_type = 'model_call' and (model is null or model = '')
                then 'missing_model'
{token_checks}
            when event_type = 'tool_call' and (tool_type is null or tool = '')
                then 'missing_tool'
            when event_type = 'tool_call' and tool_type <> 'VARCHAR' then 'invalid_tool'
{cost_checks}
            when customer_id not in (select id from known_customers) then 'unknown_customer'
            end as reason
        from typed
    )
    select source_file, line_number, reason,
        case when reason is not null then left(raw_line, 4096) end as raw_line,
        case when reason is null or (is_json and event_id_type = 'VARCHAR')
             then event_id end as event_id,
        customer_id, event_type, occurred_at, received_at,
        -- A model call's fields, and a tool call's: what the other type carries is not read.
        case when event_type = 'model_call' then model end as model,
        case when event_type = 'model_call' then request_kind end as request_kind,
        case when event_type = 'model_call' then input_tokens else 0 end as input_tokens,
        case when event_type = 'model_call' then output_tokens else 0 end as output_tokens,
        case when event_type = 'model_call' then cache_read_tokens else 0 end
            as cache_read_tokens,
        case when event_type = 'tool_call' then tool end as tool,
        case when event_type = 'tool_call' then cost_minor else 0 end as cost_minor,
        case when reason is null and event_type = 'model_call'
                 then md5(concat_ws('|', customer_id, event_type,
                     strftime(occurred_at, '%Y-%m-%dT%H:%M:%S.%f'), model, request_kind,
                     input_tokens_text, output_tokens_text, cache_read_tokens_text))
             when reason is null
                 then md5(concat_ws('|', customer_id, event_type,
                     strftime(occurred_at, '%Y-%m-%dT%H:%M:%S.%f'), tool, cost_minor_text))
             end as content_hash
    from classified
    """


def _count_checks(field: str, maximum: int, *, event_type: str) -> str:
    """The ``CASE`` branches that refuse a missing, ill-typed, negative or too large count
    (an integer that does not fit in a BIGINT, which JSON types 2**63 .. 2**64 - 1 as
    UBIGINT, does not cast: it is too large as well); only events of ``event_type`` carry it."""
    only = f"event_type = '{event_type}' and"
    return f"""            when {only} {field}_type is null then 'missing_{field}'
            when {only} {field}_type not in ('UBIGINT', 'BIGINT') then 'invalid_{field}_type'
            when {only} {field} < 0 then 'negative_{field}'
            when {only} coalesce({field} > {maximum}, true) then '{field}_too_large'"""


def ingest_usage_day(
    conn: duckdb.DuckDBPyConnection,
    *,
    raw_usage_dir: Path,
    arrival_date: date,
) -> IngestionResult:
    """Replace one arrival day's lines in the warehouse and re-decide dedup for the ids it touches.

    Runs in one DuckDB transaction: a crash leaves the previous state of the day intact.
    ``stripe_raw.customers`` must be loaded first (unknown customers are quarantined).
    """
    ensure_schema(conn)
    files = day_files(raw_usage_dir, arrival_date)
    # Checked in a thread while DuckDB reads and classifies (zlib releases the GIL).
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="gzip-check") as checker:
        file_lines = checker.submit(_count_lines_of_whole_files, files, raw_usage_dir)
        return _ingest_usage_day(
            conn,
            files=files,
            file_lines=file_lines.result,
            raw_usage_dir=raw_usage_dir,
            arrival_date=arrival_date,
        )


def _ingest_usage_day(
    conn: duckdb.DuckDBPyConnection,
    *,
    files: list[Path],
    file_lines: Callable[[], dict[str, int]],
    raw_usage_dir: Path,
    arrival_date: date,
) -> IngestionResult:
    day = _sql_string(arrival_date.isoformat())
    try:
        _load_raw_lines(conn, files, raw_usage_dir)
    except duckdb.Error as error:
        raise IngestionError(
            f"Could not read the usage files for arrival date {arrival_date} "
            f"under {raw_usage_dir}: {error}. Fix or move the offending file and re-run "
            "the partition; nothing of this day was written."
        ) from error
    conn.execute("begin transaction")
    try:
        conn.execute(
            "create or replace temp table known_customers as "
            "select distinct cast(id as varchar) as id from stripe_raw.customers"
        )
        conn.execute(f"create or replace temp table classified as {_classified_sql(arrival_date)}")
        # Ids whose first copy may change: those of the day's old rows and of its new rows.
        conn.execute(
            f"""
            create or replace temp table touched_ids as
            select event_id from ingest.usage_event_lines where arrival_date = {day}
            union
            select event_id from classified where reason is null
            """
        )
        conn.execute(
            f"""
            create or replace temp table previous_usage_dates as
            select distinct usage_date from ingest.usage_event_lines
            where arrival_date = {day}
            """
        )
        conn.execute(f"delete from ingest.usage_event_lines where arrival_date = {day}")
        conn.execute(f"delete from ingest.invalid_usage_lines where arrival_date = {day}")
        conn.execute(f"delete from ingest.usage_files where arrival_date = {day}")
        conn.execute(f"delete from ingest.partition_usage_dates where arrival_date = {day}")
        lines_read = dict(
            conn.execute("select source_file, count(*) from raw_lines group by 1").fetchall()
        )
        for relative, lines in file_lines().items():
            if lines_read.get(relative, 0) != lines:
                raise IngestionError(
                    f"{raw_usage_dir / relative} has {lines} lines but "
                    f"{lines_read.get(relative, 0)} were read. Nothing of its day was written: "
                    "re-run the day, and report the file if it happens again."
                )
        # Every file, an empty one (no lines) included.
        conn.execute(
            "create or replace temp table day_files (source_file varchar, file_bytes bigint)"
        )
        if files:
            conn.executemany(
                "insert into day_files values (?, ?)",
                [[p.relative_to(raw_usage_dir).as_posix(), p.stat().st_size] for p in files],
            )
        conn.execute(
            f"""
            insert into ingest.usage_files
            select {day}, f.source_file, count(r.line_number), f.file_bytes
            from day_files f left join raw_lines r on r.source_file = f.source_file
            group by f.source_file, f.file_bytes
            """
        )
        conn.execute(
            f"""
            insert into ingest.invalid_usage_lines
            select {day}, source_file, line_number, event_id, reason, raw_line
            from classified where reason is not null
            """
        )
        crash_point("ingestion.after_quarantine_write")
        # Ids with more than one copy once the day's new lines are in (the day's old lines are
        # deleted by now): only their copies need ranking; any other new line is the one copy
        # of its id, accepted as written.
        conn.execute(
            """
            create or replace temp table contested_ids as
            select event_id from ingest.usage_event_lines
            where event_id in (select event_id from touched_ids)
            union
            select event_id from classified where reason is null
            group by event_id having count(*) > 1
            """
        )
        conn.execute(
            f"""
            insert into ingest.usage_event_lines
            select {day}, source_file, line_number, event_id, customer_id, event_type,
                   occurred_at, received_at, cast(occurred_at as date), model, request_kind,
                   input_tokens, output_tokens, cache_read_tokens, content_hash,
                   case when event_id in (select event_id from contested_ids) then 'pending'
                        else 'accepted' end,
                   tool, cost_minor
            from classified where reason is null
            """
        )
        _decide_statuses(conn)
        conn.execute(
            f"""
            insert into ingest.partition_usage_dates
            select distinct {day}, usage_date from (
                select usage_date from ingest.usage_event_lines
                where event_id in (select event_id from touched_ids)
                union select usage_date from previous_usage_dates
            )
            """
        )
        result = _day_result(conn, arrival_date, len(files))
        crash_point("ingestion.before_day_commit")
        conn.execute("commit")
    except IngestionError:
        conn.execute("rollback")
        raise
    except duckdb.Error as error:
        conn.execute("rollback")
        raise IngestionError(
            f"Could not ingest usage files for arrival date {arrival_date} "
            f"under {raw_usage_dir}: {error}. Fix or move the offending file and re-run "
            "the partition; nothing of this day was written."
        ) from error
    return result


def _count_lines_of_whole_files(files: list[Path], raw_usage_dir: Path) -> dict[str, int]:
    """Decompress every file in full and count its lines; refuse one that is not whole gzip.

    DuckDB reads a truncated gzip file as a shorter one and does not check the CRC, so a
    corrupted byte can read as a different token count without any error. Python's gzip checks
    each member's CRC and length; the line count (as DuckDB splits lines: a last line without
    ``\\n`` counts) must then match the lines DuckDB read.
    """
    counts: dict[str, int] = {}
    for path in files:
        _require_gzip_magic(path)
        lines = 0
        last = b"\n"
        try:
            with gzip.open(path, "rb") as stream:
                while chunk := stream.read(1 << 20):
                    lines += chunk.count(b"\n")
                    last = chunk[-1:]
        except (EOFError, OSError, zlib.error) as error:
            raise _truncated_file_error(path, error) from error
        counts[path.relative_to(raw_usage_dir).as_posix()] = lines + (last != b"\n")
    return counts


def _require_gzip_magic(path: Path) -> None:
    with path.open("rb") as handle:
        if handle.read(2) != GZIP_MAGIC:
            raise IngestionError(
                f"{path} is not a gzip file (it does not start with gzip's magic). Nothing of "
                "its day was written: replace it with the complete gzip file (or move it away) "
                "and re-run the day."
            )


def _truncated_file_error(path: Path, error: Exception) -> IngestionError:
    return IngestionError(
        f"{path} is truncated or corrupt ({error}); only part of it could be read. "
        "Nothing of its day was written: restore the complete file and re-run the day."
    )


def _decide_statuses(conn: duckdb.DuckDBPyConnection) -> None:
    """Rank every copy of each contested event_id; only rows whose status changes are written."""
    conn.execute(
        """
        create or replace temp table decided as
        select source_file, line_number,
            case when copy_rank = 1 then 'accepted'
                 when content_hash = first_content_hash then 'duplicate'
                 else 'conflict' end as new_status
        from (
            select source_file, line_number, content_hash,
                row_number() over copies as copy_rank,
                first_value(content_hash) over copies as first_content_hash
            from ingest.usage_event_lines
            where event_id in (select event_id from contested_ids)
            window copies as (partition by event_id
                              order by received_at, source_file, line_number)
        )
        """
    )
    conn.execute(
        """
        update ingest.usage_event_lines as lines set status = decided.new_status
        from decided
        where lines.source_file = decided.source_file
          and lines.line_number = decided.line_number
          and lines.status <> decided.new_status
        """
    )


def _day_result(
    conn: duckdb.DuckDBPyConnection, arrival_date: date, file_count: int
) -> IngestionResult:
    row = conn.execute(
        """
        select coalesce(sum(raw_lines), 0), coalesce(sum(accepted_lines), 0),
               coalesce(sum(duplicate_lines), 0), coalesce(sum(quarantined_lines), 0)
        from ingest.usage_file_counts where arrival_date = ?
        """,
        [arrival_date],
    ).fetchone()
    assert row is not None
    usage_dates = conn.execute(
        "select usage_date from ingest.partition_usage_dates where arrival_date = ? order by 1",
        [arrival_date],
    ).fetchall()
    return IngestionResult(
        arrival_date=arrival_date,
        files=file_count,
        raw_lines=int(row[0]),
        accepted_lines=int(row[1]),
        duplicate_lines=int(row[2]),
        quarantined_lines=int(row[3]),
        usage_dates=tuple(d for (d,) in usage_dates),
    )
