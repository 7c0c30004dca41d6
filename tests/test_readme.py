"""Every ```python block in README.md runs as pasted.

The blocks of one ``## `` section run in order in one fresh interpreter (a later block may continue an
earlier one of the same section), in an empty working directory, offline. Tracebacks point at README.md
lines.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
FENCE = re.compile(r"^```(\S*)\s*$")
RUNNER = r"""
import sys
path = sys.argv[1]
lines = open(path, encoding="utf-8").read().splitlines()
namespace = {"__name__": "__main__"}
for spec in sys.argv[2:]:
    start, stop = map(int, spec.split(":"))
    source = "\n" * (start - 1) + "\n".join(lines[start - 1 : stop - 1]) + "\n"
    exec(compile(source, path, "exec"), namespace)
"""


def python_blocks_by_section(text: str) -> dict[str, list[tuple[int, int]]]:
    """``{section heading: [(first line, line after the last) of each python block]}``, 1-based lines."""
    sections: dict[str, list[tuple[int, int]]] = {}
    heading, fence_lang, start = "(top)", None, 0
    for number, line in enumerate(text.splitlines(), start=1):
        match = FENCE.match(line)
        if fence_lang is None and match:
            fence_lang, start = match.group(1), number + 1
        elif fence_lang is not None and line.strip() == "```":
            if fence_lang == "python":
                sections.setdefault(heading, []).append((start, number))
            fence_lang = None
        elif fence_lang is None and line.startswith("## "):
            heading = line[3:].strip()
    return sections


def test_block_extraction_on_a_small_document():
    doc = "# t\n## A\n```python\nx = 1\n```\n```bash\nls\n```\n## B\n```python\ny = 2\nz = 3\n```\n"
    assert python_blocks_by_section(doc) == {"A": [(4, 5)], "B": [(11, 13)]}


SECTIONS = python_blocks_by_section(README.read_text(encoding="utf-8"))


@pytest.mark.parametrize("heading", sorted(SECTIONS), ids=lambda h: h.split(":")[0])
def test_readme_section_runs_as_pasted(heading, tmp_path):
    specs = [f"{a}:{b}" for a, b in SECTIONS[heading]]
    result = subprocess.run([sys.executable, "-c", RUNNER, str(README), *specs], cwd=tmp_path,
                            capture_output=True, text=True, timeout=600)
    if result.returncode != 0:
        pytest.fail(f"README section {heading!r} failed:\n{result.stderr[-4000:]}", pytrace=False)
