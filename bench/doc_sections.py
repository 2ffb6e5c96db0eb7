"""Replace one ``## `` section of a markdown document, leaving the others as they are.

Several benchmark scripts each own a section of the same document (docs/reliability.md); each
reads the file right before writing, so it keeps what the others wrote.
"""

from __future__ import annotations

from pathlib import Path


def replace_section(path: Path, heading: str, section: str, *, empty_text: str) -> None:
    """Replace the section under ``heading`` (up to the next ``## `` heading) with ``section``,
    or append it; a missing file starts as ``empty_text``."""
    text = path.read_text() if path.exists() else empty_text
    path.write_text(replaced_section(text, heading, section))


def replaced_section(text: str, heading: str, section: str) -> str:
    lines = text.splitlines(keepends=True)
    start = next((i for i, line in enumerate(lines) if line.rstrip() == heading), None)
    if start is None:
        return text.rstrip("\n") + "\n\n" + section
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
    following = "".join(lines[end:])
    return "".join(lines[:start]) + section + ("\n" + following if following else "")
