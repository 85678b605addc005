"""The README's result tables are generated from the results files, never copied by hand: each one sits between
`<!-- table: benchmarks/NAME.py ARGS -->` and `<!-- /table -->` and is exactly what `python benchmarks/NAME.py
ARGS` prints (a score benchmark's `--table`, which reads its JSON in `benchmarks/results/`).

Run:  python benchmarks/readme_tables.py           (rewrite every block from the results files)
      python benchmarks/readme_tables.py --check   (exit 1 naming each block that differs; tests/test_readme_tables.py)
"""
from __future__ import annotations

import argparse
import contextlib
import functools
import importlib.util
import io
import re
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parent
README = BENCHMARKS.parent / "README.md"
BEGIN = re.compile(r"^<!-- table: (benchmarks/[a-z0-9_]+\.py)((?: [^ ]+)*) -->$")
END = "<!-- /table -->"


@dataclass
class Block:
    line: int  # 1-based line of the opening marker
    script: str
    args: list[str]
    start: int  # index of the first line inside the block
    stop: int  # index of the closing marker


def blocks(lines: list[str], where: str) -> list[Block]:
    """The generated blocks of a README's lines; a marker without its end, or naming a script that is not one of
    the repository's benchmarks, is an error."""
    found = []
    i = 0
    while i < len(lines):
        match = BEGIN.match(lines[i])
        if lines[i].startswith("<!-- table:") and not match:
            raise ValueError(f"{where}:{i + 1}: a table marker must read '<!-- table: benchmarks/NAME.py ARGS -->'")
        if match:
            if not (BENCHMARKS.parent / match.group(1)).is_file():
                raise ValueError(f"{where}:{i + 1}: {match.group(1)} is not a benchmark script of this repository")
            try:
                stop = lines.index(END, i + 1)
            except ValueError:
                raise ValueError(f"{where}:{i + 1}: the table has no closing '{END}'") from None
            found.append(Block(i + 1, match.group(1), shlex.split(match.group(2)), i + 1, stop))
            i = stop
        i += 1
    return found


@functools.cache
def _benchmark(script: str):
    """The benchmark module of `script`, loaded once however many blocks use it."""
    path = BENCHMARKS.parent / script
    spec = importlib.util.spec_from_file_location(f"_readme_table_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def generated(block: Block) -> list[str]:
    """What the block's command prints, run in this process (the benchmark's `main(argv)`)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        _benchmark(block.script).main(block.args)
    return out.getvalue().rstrip("\n").splitlines()


def stale_blocks(readme: Path = README) -> list[str]:
    """One line per block whose text differs from its command's output."""
    lines = readme.read_text().splitlines()
    return [f"{readme.name}:{b.line}: the table differs from `python {b.script} {' '.join(b.args)}`"
            for b in blocks(lines, readme.name) if lines[b.start:b.stop] != generated(b)]


def rewrite(readme: Path = README) -> int:
    """Replace every block's text with its command's output; the number of blocks changed."""
    lines = readme.read_text().splitlines()
    changed = 0
    for b in reversed(blocks(lines, readme.name)):
        new = generated(b)
        if lines[b.start:b.stop] != new:
            lines[b.start:b.stop] = new
            changed += 1
    readme.write_text("\n".join(lines) + "\n")
    return changed


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--check", action="store_true", help="report stale tables and exit 1 instead of rewriting")
    p.add_argument("--readme", default=str(README))
    args = p.parse_args(argv)
    if args.check:
        stale = stale_blocks(Path(args.readme))
        print("\n".join(stale) or "every generated table matches its results file")
        return 1 if stale else 0
    print(f"{rewrite(Path(args.readme))} table(s) rewritten in {args.readme}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
