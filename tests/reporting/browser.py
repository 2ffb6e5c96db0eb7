"""Headless Chromium for the report tests: what the page looks like after its JavaScript ran.

Chromium is a Debian package (``.ci/run`` installs it). Without it these tests fail with a
message saying so rather than skip: a skipped browser test would let a report whose charts never
draw pass CI.
"""

from __future__ import annotations

import shutil
import struct
import subprocess
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

import pytest

CHROMIUM_CANDIDATES = ("chromium", "/usr/bin/chromium", "chromium-browser")
# Virtual time: Chromium advances its clock until the page is idle or the budget is spent, so
# the result does not depend on how fast this machine is.
VIRTUAL_TIME_BUDGET_MS = 10_000
# A bound on a stuck browser, not a timing assertion.
PROCESS_TIMEOUT_SECONDS = 180
# Elements that never have an end tag in the HTML that --dump-dom serialises.
VOID_ELEMENTS = frozenset(
    {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "wbr"}
)


def chromium() -> str:
    for candidate in CHROMIUM_CANDIDATES:
        found = shutil.which(candidate)
        if found:
            return found
    pytest.fail(
        "Chromium is needed to check that the report's charts draw: install Debian's package "
        "with `apt-get install -y chromium` (.ci/run does this when /usr/bin/chromium is missing)."
    )


def _run_chromium(page: Path, profile_dir: Path, *arguments: str) -> str:
    command = [
        chromium(),
        "--headless",
        "--disable-gpu",
        "--no-sandbox",
        "--no-first-run",
        "--hide-scrollbars",
        f"--user-data-dir={profile_dir}",
        f"--virtual-time-budget={VIRTUAL_TIME_BUDGET_MS}",
        *arguments,
        page.resolve().as_uri(),
    ]
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=PROCESS_TIMEOUT_SECONDS, check=False
    )
    assert result.returncode == 0, f"chromium failed ({result.returncode}): {result.stderr[-2000:]}"
    return result.stdout


def dump_dom(page: Path, profile_dir: Path) -> str:
    """The DOM after the page's scripts ran, serialised as HTML."""
    return _run_chromium(page, profile_dir, "--dump-dom")


def screenshot(page: Path, profile_dir: Path, target: Path, *, width: int, height: int) -> Path:
    _run_chromium(page, profile_dir, f"--screenshot={target}", f"--window-size={width},{height}")
    assert target.exists(), f"chromium wrote no screenshot to {target}"
    return target


def png_size(path: Path) -> tuple[int, int]:
    """Width and height from the PNG header."""
    header = path.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    width, height = struct.unpack(">II", header[16:24])
    return width, height


@dataclass
class ChartContainer:
    """A ``data-chart`` element of the page, and what ended up inside it."""

    name: str
    attributes: dict[str, str]
    # (tag, class) of every element inside the container.
    descendants: list[tuple[str, str]] = field(default_factory=list)

    @property
    def classes(self) -> set[str]:
        return set(self.attributes.get("class", "").split())

    def count(self, tag: str, class_part: str = "") -> int:
        return sum(1 for t, c in self.descendants if t == tag and class_part in c)


class _ChartCollector(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.charts: dict[str, ChartContainer] = {}
        self._open: list[tuple[str, ChartContainer | None]] = []

    def _current(self) -> ChartContainer | None:
        return next((chart for _, chart in reversed(self._open) if chart is not None), None)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = {name: value or "" for name, value in attrs}
        current = self._current()
        if current is not None:
            current.descendants.append((tag, attributes.get("class", "")))
        chart = None
        if "data-chart" in attributes and current is None:
            chart = ChartContainer(name=attributes["data-chart"], attributes=attributes)
            self.charts[chart.name] = chart
        if tag not in VOID_ELEMENTS:
            self._open.append((tag, chart))

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        current = self._current()
        if current is not None:
            current.descendants.append((tag, dict(attrs).get("class") or ""))

    def handle_endtag(self, tag: str) -> None:
        for index in range(len(self._open) - 1, -1, -1):
            if self._open[index][0] == tag:
                del self._open[index:]
                return


def chart_containers(dom: str) -> dict[str, ChartContainer]:
    collector = _ChartCollector()
    collector.feed(dom)
    collector.close()
    return collector.charts


def undrawn_charts(dom: str) -> dict[str, str]:
    """Each chart container that vega-embed did not draw, with what is missing.

    Drawn means: vega-embed marked the container (class ``vega-embed``), the page's own script
    saw the embed promise resolve (``data-rendered``), and the SVG renderer put at least one
    mark group with a shape into it.
    """
    problems = {}
    for name, chart in chart_containers(dom).items():
        missing = []
        if "vega-embed" not in chart.classes:
            missing.append("no vega-embed class")
        if chart.attributes.get("data-rendered") != "true":
            error = chart.attributes.get("data-error")
            missing.append(f"not rendered ({error})" if error else "not rendered")
        if chart.count("svg", "marks") == 0:
            missing.append("no marks svg")
        if chart.count("g", "role-mark") == 0:
            missing.append("no mark group")
        if chart.count("path") + chart.count("rect") + chart.count("circle") == 0:
            missing.append("no shapes")
        if missing:
            problems[name] = ", ".join(missing)
    return problems
