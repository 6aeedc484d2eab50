"""The sinusoid study's "metarep vs published" table: published.toml read, checked and set beside
the noiseless rows."""

from __future__ import annotations

from pathlib import Path

import pytest

from metarep.config.schema import ConfigError
from metarep.reproduce.sinusoid import QUOTE_KEYS, load_published, published_table, render

QUOTE = """
[[quote]]
source = "A paper"
arxiv = "0000.00000"
table = "Table 9"
kind = "paper"
method = "maml"
K = 5
value = 1.5
interval = 0.25
interval_is = "95% confidence interval"
train_iterations = 100
test_tasks = 600
test_steps = 1
retrieved_from = "somewhere"

[[quote]]
source = "A project"
arxiv = "-"
table = "README"
kind = "reimplementation"
method = "meta-sgd"
K = 5
value = 0.75
interval = "none stated"
interval_is = "none stated"
train_iterations = "not stated"
test_tasks = "not stated"
test_steps = "not stated"
retrieved_from = "elsewhere"
"""

ROWS = [{"noise": 0.0, "K": 5, "method": "maml", "mse_1": 1.31, "mse_1_se": 0.13, "mse_10": 1.3, "mse_10_se": 0.23},
        {"noise": 0.3, "K": 5, "method": "maml", "mse_1": 9.0, "mse_1_se": 1.0, "mse_10": 9.0, "mse_10_se": 1.0}]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "published.toml"
    path.write_text(text)
    return path


def cells(table: str) -> list[list[str]]:
    return [[c.strip() for c in line.strip("|").split("|")] for line in table.splitlines() if line.startswith("|")]


def test_the_table_sets_each_quote_beside_the_noiseless_row_of_its_k_and_method(tmp_path):
    quotes = load_published(write(tmp_path, QUOTE))
    table = cells(published_table(ROWS, quotes))
    assert table[0] == ["K", "method", "metarep MSE, 1 step", "metarep MSE, 10 steps", "published", "source"]
    assert table[2:] == [
        ["5", "maml", "1.31 +- 0.13", "1.3 +- 0.23", "1.5 +- 0.25", "A paper, arXiv 0000.00000, Table 9 (paper)"],
        ["5", "meta-sgd", "-", "-", "0.75 (none stated)", "A project, README (reimplementation)"]]   # not the noisy row
    page = render([], [], "header", quotes)
    assert "## metarep vs published (noiseless)" in page and page.index("published") < page.index("## Findings")


def test_no_file_no_table(tmp_path):
    assert load_published(tmp_path / "absent.toml") == []
    assert "metarep vs published" not in render([], [], "header", [])


@pytest.mark.parametrize("key", ["value", "retrieved_from", "K"])
def test_a_quote_without_a_key_is_a_one_line_config_error_naming_it(tmp_path, key):
    text = "\n".join(line for line in QUOTE.splitlines() if not line.startswith(f"{key} ="))
    with pytest.raises(ConfigError, match=f"quote 1 lacks {key}") as err:
        load_published(write(tmp_path, text))
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("text, message", [
    (QUOTE.replace("K = 5", 'K = "five"', 1), "quote 1 has K of the wrong type"),
    (QUOTE.replace("value = 0.75", "value = true"), "quote 2 has value of the wrong type"),
    ('title = "no quotes"\n', "no \\[\\[quote\\]\\] entries"),
    ("[[quote\n", "not valid TOML"),
])
def test_malformed_files_are_config_errors(tmp_path, text, message):
    with pytest.raises(ConfigError, match=message):
        load_published(write(tmp_path, text))


def test_the_repository_file_reads_and_quotes_with_its_source():
    path = Path(__file__).parents[1] / "experiments" / "sinusoid" / "published.toml"
    quotes = load_published(path)
    assert quotes and all(set(QUOTE_KEYS) <= set(q) and q["retrieved_from"] for q in quotes)
    assert {(q["K"], q["method"]) for q in quotes if q["kind"].startswith("paper")} >= {(5, "maml")}
