"""The documentation a user reads: the README is a quickstart that starts with the two commands
(the second is the one CI runs), every link between the pages resolves, and nothing cites a file
outside the repository."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
LINK = re.compile(r"\]\(([^)#\s]+)(#[^)]*)?\)")


def test_the_readme_is_a_quickstart_that_starts_with_the_two_commands() -> None:
    lines = (REPO / "README.md").read_text().splitlines()
    assert len(lines) <= 200
    assert lines[2] == "```bash" and lines[5] == "```"
    install_and_run, install_and_test = lines[3], lines[4]
    assert install_and_run.endswith("&& softmax-suite run")
    assert install_and_test in (REPO / ".ci" / "run").read_text()


def test_every_relative_link_resolves() -> None:
    for page in PAGES:
        for target, _ in LINK.findall(page.read_text()):
            if "://" in target:
                continue
            assert (page.parent / target).resolve().exists(), f"{page.name}: {target}"


def test_no_page_cites_a_file_outside_the_repository() -> None:
    # the facts the project needs are in docs/numerics.md, in its own words
    outside = ("NUMERICS" + ".md", "../" + "shared")
    for page in [*PAGES, *REPO.glob("*/*.py"), *REPO.glob("*/*/*.py")]:
        text = page.read_text()
        assert not any(name in text for name in outside), page
