"""`metarep report DIR`: one readable page for a sweep, a single run or a reproduction directory,
whose links all point at files that exist."""

from __future__ import annotations

import re
import shutil
import statistics
from pathlib import Path

import pytest

from metarep.cli import main
from metarep.report import ReportError, kind_of, write_report
from metarep.running.execute import execute_run
from metarep.storage.results import Results

TINY = """
[problem]
d = 5
k = 2

[model]
width = 5

[method]
name = "fo-anil"

[train]
tasks = 20
steps = 30
log_every = 10

[test]
tasks = 50
"""


def links(page: Path) -> list[str]:
    """Targets of every Markdown link and image on the page."""
    return re.findall(r"\]\(([^)\s]+)\)", page.read_text())


def assert_links_exist(page: Path) -> None:
    targets = links(page)
    assert targets
    for target in targets:
        assert not target.startswith("/"), target
        assert (page.parent / target.replace("%20", " ")).exists(), target


@pytest.fixture(scope="module")
def config(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("cfg") / "tiny.toml"
    path.write_text(TINY)
    return path


@pytest.fixture(scope="module")
def sweep_dir(config, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("report") / "sweep"
    # values given out of order, and one run that diverges
    args = ["sweep", str(config), "--grid", "train.m_in=10,5", "--grid", "train.beta=0.05,1000", "--seeds", "0-1",
            "--workers", "2", "--quiet", "--out", str(out)]
    assert main(args) == 0
    return out


def test_sweep_report(sweep_dir, capsys):
    assert main(["report", str(sweep_dir)]) == 0
    page = sweep_dir / "report.md"
    assert str(page) in capsys.readouterr().out
    text = page.read_text()
    assert text.startswith("# Sweep report: tiny")
    assert "8 runs: 4 completed, 4 diverged, 0 failed" in text
    assert "| train.m_in | 10, 5" in text.replace("  ", " ") or "train.m_in" in text
    assert "--grid train.m_in=10,5 --grid train.beta=0.05,1000 --seeds 0-1" in text
    assert_links_exist(page)
    assert sum(t.endswith("metrics.png") for t in links(page)) >= 8
    # the aggregated table: sorted by the grid values, mean +- sd over the two seeds
    with Results(sweep_dir / "results.sqlite") as table:
        rows = table.rows()
    risks = [r["excess_risk"] for r in rows if r["train.m_in"] == 5 and r["train.beta"] == 0.05]
    assert len(risks) == 2
    cell = f"{statistics.fmean(risks):.4g} ± {statistics.stdev(risks):.2g}"
    results = text.split("## Results")[1].split("## Every run")[0]
    lines = [line for line in results.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert [line.split("|")[1].strip() for line in lines] == ["5", "5", "10", "10"]
    assert cell in lines[0]
    assert "0, 2 diverged" in lines[1]
    assert "## Runs that diverged or failed" in text


def test_report_from_results_csv_alone(sweep_dir, tmp_path):
    copy = tmp_path / "copy"
    copy.mkdir()
    shutil.copy(sweep_dir / "results.csv", copy / "results.csv")
    assert kind_of(copy) == "sweep"
    page = write_report(copy)
    assert "8 runs: 4 completed, 4 diverged" in page.read_text()


def test_single_run_report(config, tmp_path):
    run_dir = tmp_path / "run"
    execute_run(config, [], run_dir)
    page = write_report(run_dir)
    text = page.read_text()
    assert text.startswith("# Run report: run")
    assert "completed 30 steps" in text and "test excess risk" in text and "```toml" in text
    assert "![" in text and "(metrics.png)" in text
    assert_links_exist(page)


def test_reproduction_report(sweep_dir, tmp_path):
    repro = tmp_path / "repro"
    (repro / "figures").mkdir(parents=True)
    (repro / "table1.md").write_text("# Table 1\n\n| method | excess risk |\n|---|---|\n| FO-ANIL | 0.77 |\n\n"
                                     "![fig](figures/fig1.png)\n")
    (repro / "table1.csv").write_text("method,excess_risk\nFO-ANIL,0.77\n")
    (repro / "study.csv").write_text("m_in,excess_risk\n5,0.812345678\n10,0.79\n")
    png = next((sweep_dir / "runs").glob("*/metrics.png"))
    shutil.copy(png, repro / "figure1.png")
    shutil.copy(png, repro / "figures" / "fig1.png")
    shutil.copytree(png.parent, repro / "fo_anil_run")
    assert kind_of(repro) == "reproduction"
    assert main(["report", str(repro)]) == 0
    page = repro / "report.md"
    text = page.read_text()
    assert text.startswith("# Reproduction report: repro")
    assert "### Table 1" in text and "| FO-ANIL | 0.77 |" in text
    assert "0.8123" in text  # the CSV rendered as a table
    assert "(figure1.png)" in text and "(figures/fig1.png)" in text
    assert "fo_anil_run" in text
    assert_links_exist(page)
    write_report(repro)  # a second report does not include the first
    assert page.read_text().count("# Reproduction report") == 1


def test_report_refuses_other_directories(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("x")
    for directory in (tmp_path / "empty", tmp_path / "other", tmp_path / "missing"):
        assert main(["report", str(directory)]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and "\n" not in err
        assert not (directory / "report.md").exists()
    with pytest.raises(ReportError):
        write_report(tmp_path / "empty")
