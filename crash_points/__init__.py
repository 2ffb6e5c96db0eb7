"""Named points where the reliability harness kills the process, as a crash would (test only).

Production code marks the moments between two writes with ``crash_point("<step>.<moment>")``.
Nothing happens unless the environment variable ``METERBOOK_CRASH_AT`` names that point: then the
process sends itself SIGKILL there, leaving whatever a power cut or the OOM killer would leave
(open transactions, lock files, a Dagster run marked started, a request Stripe accepted but
nobody recorded). ``METERBOOK_CRASH_AT=<name>:<n>`` kills at the n-th time the point is reached
(1 by default). Never set it outside a test: it exists for ``tests/reliability/test_crashes.py``
and ``bench/reliability_crashes.py``.

The variable is read once, at import; an unset variable costs one dictionary lookup per point.
"""

from __future__ import annotations

import os
import signal
import threading

VARIABLE = "METERBOOK_CRASH_AT"


def _parse(value: str | None) -> tuple[str, int] | None:
    if not value:
        return None
    name, _, count = value.partition(":")
    times = int(count) if count else 1
    if not name or times < 1:
        raise ValueError(f"{VARIABLE}={value!r}: expected <point name> or <point name>:<n>, n >= 1")
    return name, times


_target = _parse(os.environ.get(VARIABLE))
_reached: dict[str, int] = {}
_lock = threading.Lock()


def crash_point(name: str, *, process_group: bool = False) -> None:
    """Kill this process with SIGKILL if ``METERBOOK_CRASH_AT`` names this point (and this is
    its n-th time). ``process_group=True`` kills this process's whole group, child processes
    (a dbt subprocess) included, as a machine or container going down would; only when this
    process leads its group (the harness starts it with ``start_new_session``), else itself."""
    if _target is None or _target[0] != name:
        return
    with _lock:
        _reached[name] = _reached.get(name, 0) + 1
        if _reached[name] != _target[1]:
            return
    if process_group and os.getpgid(0) == os.getpid():  # only a group this process leads
        os.killpg(os.getpid(), signal.SIGKILL)
    os.kill(os.getpid(), signal.SIGKILL)


__all__ = ["VARIABLE", "crash_point"]
