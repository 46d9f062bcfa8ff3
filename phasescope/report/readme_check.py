"""Whether the README's headline block says what the demo printed: the block of ``- `` lines after
"It prints the headline findings" against the demo's ``report/headline.txt``.

    python -m phasescope.report.readme_check README.md runs/demo      # exit 1 and the lines that differ
"""

from __future__ import annotations

import sys
from pathlib import Path

from phasescope.errors import PhasescopeError
from phasescope.files import read_text_file

HEADLINE_FILE = "headline.txt"  # in a demo's report folder: one finding per line, as the demo prints them
MARKER = "It prints the headline findings"


def readme_headline(readme: str) -> list[str]:
    """The findings of the README's headline block (its fenced block after :data:`MARKER`, ``- `` removed)."""
    if MARKER not in readme:
        raise PhasescopeError(f"the README has no headline block (a fenced block after {MARKER!r})")
    after = readme[readme.index(MARKER):]
    start = after.index("```") + 3
    block = after[start:after.index("```", start)]
    return [line.removeprefix("- ") for line in block.strip().splitlines()]


def headline_differences(readme: str, printed: list[str]) -> list[str]:
    """The lines on which the README and the demo's printed headline differ (README's first), or none."""
    stated = readme_headline(readme)
    differences = [f"README: {ours}\n  demo: {theirs}" for ours, theirs in zip(stated, printed) if ours != theirs]
    if len(stated) != len(printed):
        differences.append(f"README has {len(stated)} findings, the demo printed {len(printed)}")
    return differences


def main(arguments: list[str]) -> int:
    if len(arguments) != 2:
        print("usage: python -m phasescope.report.readme_check README.md DEMO_DIR", file=sys.stderr)
        return 2
    readme, demo = Path(arguments[0]), Path(arguments[1])
    try:
        printed = read_text_file(demo / "report" / HEADLINE_FILE).splitlines()
        differences = headline_differences(read_text_file(readme), printed)
    except (PhasescopeError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for difference in differences:
        print(difference, file=sys.stderr)
    if differences:
        print(f"{readme}'s headline block differs from what the demo in {demo} printed ({len(differences)} "
              "line(s)): copy the printed lines into it", file=sys.stderr)
        return 1
    print(f"{readme}'s headline block matches the demo in {demo}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
