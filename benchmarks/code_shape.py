"""The longest functions in the library (issue 13: none over ~40 lines).

    python benchmarks/code_shape.py                 # the 10 longest in lmrl_lightning/, tasks/, callbacks/
    python benchmarks/code_shape.py --max 40        # exit 1 if any is longer than 40 lines
    python benchmarks/code_shape.py --top 20 lmrl_lightning/data

A function's length is counted from its `def` line (decorators excluded) to its last line, docstring and
comments included: what a reader has to scroll through. Nested functions are listed on their own and also
count towards the function that holds them.
"""
from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path
from typing import Iterator, NamedTuple

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DIRS = ("lmrl_lightning", "tasks", "callbacks")


class FunctionLength(NamedTuple):
    path: str
    line: int
    name: str
    length: int


def iter_functions(path: Path) -> Iterator[FunctionLength]:
    """Every function and method in `path`, with its qualified name (`Class.method`, `outer.inner`)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    shown = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path

    def visit(node: ast.AST, prefix: str) -> Iterator[FunctionLength]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = child.end_lineno - child.lineno + 1
                yield FunctionLength(str(shown), child.lineno, prefix + child.name, length)
                yield from visit(child, f"{prefix}{child.name}.")
            elif isinstance(child, ast.ClassDef):
                yield from visit(child, f"{prefix}{child.name}.")
            else:
                yield from visit(child, prefix)

    yield from visit(tree, "")


def longest_functions(dirs: list[Path]) -> list[FunctionLength]:
    """All functions in `dirs` (folders or files), longest first (ties by path and line: a stable order)."""
    paths = [path for d in dirs for path in (sorted(d.rglob("*.py")) if d.is_dir() else [d])]
    functions = [f for path in paths for f in iter_functions(path)]
    return sorted(functions, key=lambda f: (-f.length, f.path, f.line))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dirs", nargs="*", default=list(DEFAULT_DIRS), help="folders or files to scan (default: %(default)s)")
    parser.add_argument("--top", type=int, default=10, help="how many functions to list (default: %(default)s)")
    parser.add_argument("--max", type=int, default=None, help="exit 1 if any function is longer than this")
    args = parser.parse_args(argv)
    dirs = [Path(d) if Path(d).is_absolute() else ROOT / d for d in args.dirs]
    functions = longest_functions(dirs)
    for f in functions[: args.top]:
        print(f"{f.length:4d}  {f.path}:{f.line}  {f.name}")
    if args.max is None:
        return 0
    too_long = [f for f in functions if f.length > args.max]
    if too_long:
        print(f"{len(too_long)} function(s) longer than {args.max} lines", file=sys.stderr)
        return 1
    print(f"no function longer than {args.max} lines")
    return 0


if __name__ == "__main__":
    sys.exit(main())
