"""The README's result tables are the score benchmarks' `--table` output of the committed results files
(`benchmarks/readme_tables.py`): a figure edited by hand, or a results file rerun without regenerating the README,
fails here."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("readme_tables", ROOT / "benchmarks" / "readme_tables.py")
readme_tables = importlib.util.module_from_spec(_spec)
sys.modules["readme_tables"] = readme_tables  # its dataclass looks its module up there
_spec.loader.exec_module(readme_tables)


def test_every_readme_table_is_its_results_file():
    assert len(readme_tables.blocks((ROOT / "README.md").read_text().splitlines(), "README.md")) >= 2
    assert readme_tables.stale_blocks(ROOT / "README.md") == []


def test_a_hand_edited_figure_is_found_and_rewritten(tmp_path):
    readme = tmp_path / "README.md"
    lines = (ROOT / "README.md").read_text().splitlines()
    first = readme_tables.blocks(lines, "README.md")[0]
    row = first.start + 2  # the first row under the header and its rule
    lines[row] = lines[row].replace("|", "| 99.9 |", 1)
    readme.write_text("\n".join(lines) + "\n")
    assert readme_tables.stale_blocks(readme) == [
        f"README.md:{first.line}: the table differs from `python {first.script} {' '.join(first.args)}`"]
    assert readme_tables.rewrite(readme) == 1 and readme_tables.stale_blocks(readme) == []


@pytest.mark.parametrize("text, message", [
    ("<!-- table: benchmarks/../setup.py --table -->\n<!-- /table -->", "a table marker must read"),
    ("<!-- table: benchmarks/no_such_bench.py --table -->\n<!-- /table -->", "is not a benchmark script"),
    ("<!-- table: benchmarks/wordle_scores.py --table -->\n| a |", "has no closing"),
])
def test_bad_markers_are_one_line_errors(text, message):
    with pytest.raises(ValueError, match=message):
        readme_tables.blocks(text.splitlines(), "README.md")
