"""docs/findings.md cannot drift from what the commands write: every number it quotes names its
source, `FILE:KEY` in code (a column of a CSV file, or a dotted key of a summary JSON file),
and each source must exist in the `--quick` output of the command that writes it. Each finding
names its command, shows its committed figure and a table, and says what stays open."""

import json
import re
from pathlib import Path

import pytest

from metarep.reproduce.cli import STUDIES
from quick_reproduce import quick, read_csv

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "findings.md"
SOURCE = re.compile(r"`([a-z0-9]+)(_[a-z0-9_]+)?\.(csv|json):([A-Za-z0-9_.]+)`")
COMMANDS = {"table1", "figure1", *(name for name, _, _ in STUDIES)}
LATER = "still to come"          # the heading of the place left for reproductions not written yet
MAX_PNG_BYTES = 200_000


def sections() -> dict[str, str]:
    parts = re.split(r"^## ", PAGE.read_text(), flags=re.M)[1:]
    return {p.splitlines()[0].strip(): p for p in parts}


def findings() -> dict[str, str]:
    return {title: body for title, body in sections().items() if LATER not in title.lower()}


def sources() -> set[tuple[str, str, str, str]]:
    """(command, file name, kind, key) of every source the page quotes."""
    return {(m[0], f"{m[0]}{m[1]}.{m[2]}", m[2], m[3]) for m in SOURCE.findall(PAGE.read_text())}


def test_the_page_answers_each_open_question_and_claim():
    titles = " / ".join(sections()).lower()
    for topic in ("finite tasks", "test time", "mu*", "alpha, beta, m_in", "low-rank", "finite m_in",
                  "infinite tasks beat infinite samples", "burer-monteiro", "nonlinear networks",
                  "real multi-task data"):
        assert topic in titles, topic


@pytest.mark.parametrize("title", sorted(findings()))
def test_each_finding_has_command_figure_table_sources_and_what_stays_open(title):
    body = findings()[title]
    commands = set(re.findall(r"`metarep reproduce (\w+)", body))
    assert commands and commands <= COMMANDS, title
    figures = re.findall(r"!\[[^\]]*\]\((findings/[\w.-]+\.png)\)", body)
    assert figures, title
    for fig in figures:
        data = (PAGE.parent / fig).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) < MAX_PNG_BYTES, fig
    assert re.search(r"^\|.*\|\s*$", body, re.M), f"{title}: no table"
    assert SOURCE.search(body), f"{title}: no number names its source"
    assert re.search(r"^\*\*(Open|Does not hold)", body, re.M), f"{title}: says nothing of what stays open"


def test_every_figure_in_docs_findings_is_used_and_small():
    used = set(re.findall(r"\((findings/[\w.-]+\.png)\)", PAGE.read_text()))
    on_disk = {f"findings/{p.name}" for p in (PAGE.parent / "findings").glob("*.png")}
    assert used == on_disk
    assert all((PAGE.parent / p).stat().st_size < MAX_PNG_BYTES for p in on_disk)


def _json_key(data, key: str) -> bool:
    for part in key.split("."):
        if not isinstance(data, dict) or part not in data:
            return False
        data = data[part]
    return True


@pytest.mark.parametrize("command", sorted({s[0] for s in sources()}))
def test_quoted_sources_exist_in_the_quick_output(command):
    assert command in COMMANDS
    out = quick(command)
    for _, name, kind, key in sorted(s for s in sources() if s[0] == command):
        path = out / name
        assert path.exists(), f"{name} is not written by `metarep reproduce {command}`"
        if kind == "csv":
            assert key in read_csv(path)[0], f"{name} has no column {key!r}"
        else:
            assert _json_key(json.loads(path.read_text()), key), f"{name} has no key {key!r}"


def test_a_source_that_does_not_exist_fails(tmp_path):
    """The check above can fail: a made-up key of a real file is caught."""
    (tmp_path / "x_summary.json").write_text(json.dumps({"a": {"b": 1}}))
    data = json.loads((tmp_path / "x_summary.json").read_text())
    assert _json_key(data, "a.b") and not _json_key(data, "a.c") and not _json_key(data, "a.b.c")
