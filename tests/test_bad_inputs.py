"""Bad inputs through `lmrl` (issue 12), table-driven from tests/bad_input_cases.py: each must end in exit code 2
and one clean `lmrl: error:` line with the case's key words (the definition of clean is in that module), and no
code from a file may run.

The catalogue runs in-process through `lmrl_lightning.cli.main` (a subprocess costs ~7 s of imports), so an
exception escaping `main` counts as a traceback; a few cases also run as real subprocesses, where what matters is
the stderr a person sees. benchmarks/bad_inputs.py runs every case as a subprocess.

Every case is clean today (benchmarks/results/bad_inputs.json: 149 of 149); the heavy ones (a 20 MB line, 10**12
episodes) are marked slow because a regression would run the whole command.
"""
from __future__ import annotations

import os
import subprocess
import sys
import traceback as tb
from pathlib import Path

import pytest

import bad_input_cases as catalogue
from lmrl_lightning.cli import main

# Run as real subprocesses too: the stderr a person sees, and code that must not run.
SUBPROCESS_CASES = ("code-eval-export-trust-remote-code", "code-ckpt-path-url-payload")
# Run only as a subprocess (below): accepted, it evaluates 25 maze episodes, too slow to run twice.
SUBPROCESS_ONLY = ("code-eval-export-trust-remote-code",)

CASES = catalogue.cases()


def _marks(case: catalogue.Case):
    if case.heavy:
        return [pytest.mark.slow]
    return []


@pytest.fixture(scope="module")
def fixtures(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad_input_fixtures")

    def run(argv, cwd):
        old = os.getcwd()
        os.chdir(cwd)
        try:
            return main(argv)
        finally:
            os.chdir(old)

    fx = catalogue.build_fixtures(root, run)
    fx.payload_url, server = catalogue.serve_payload(root / "payload")
    yield fx
    server.shutdown()


def run_in_process(case: catalogue.Case, fx: catalogue.Fixtures, d: Path, capfd, monkeypatch) -> tuple[str, str]:
    argv = case.build(fx, d)
    monkeypatch.chdir(d)
    monkeypatch.syspath_prepend(str(d))
    monkeypatch.setenv("TORCH_HOME", str(d / ".torch"))
    for name in ("evil_algo",):
        monkeypatch.delitem(sys.modules, name, raising=False)
    capfd.readouterr()
    escaped = None
    try:
        code = main(argv)
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except Exception:  # noqa: BLE001 - what a person would see as a traceback
        code, escaped = 1, tb.format_exc()
    finally:
        sys.modules.pop("evil_algo", None)
    err = capfd.readouterr().err + (escaped or "")
    return catalogue.classify(case, d, code, err, traceback=escaped is not None)


def test_the_catalogue_covers_issue_12(fixtures, tmp_path):
    """At least 80 cases of every kind the issue lists, each building a command line."""
    assert len(CASES) >= 80
    kinds = {c.kind for c in CASES}
    assert {"dataset", "fit", "config", "resume", "code", "eval", "export", "data", "play"} <= kinds
    assert sum(c.marker for c in CASES) >= 3
    for case in CASES:
        d = tmp_path / case.name
        d.mkdir()
        argv = case.build(fixtures, d)
        assert isinstance(argv, list) and all(isinstance(a, str) for a in argv), case.name


@pytest.mark.parametrize("case", [pytest.param(c, id=c.name, marks=_marks(c)) for c in CASES
                                  if c.name not in SUBPROCESS_ONLY])
def test_bad_input_is_one_clean_error_line(case, fixtures, tmp_path, capfd, monkeypatch):
    category, detail = run_in_process(case, fixtures, tmp_path, capfd, monkeypatch)
    assert category == "clean", f"{case.name}: {category}: {detail}"


@pytest.mark.parametrize("name", SUBPROCESS_CASES)
def test_bad_input_through_the_real_command(name, fixtures, tmp_path):
    """The real `python -m lmrl_lightning.cli`: exit 2, no traceback or usage text, one error line, no code run."""
    case = next(c for c in CASES if c.name == name)
    argv = case.build(fixtures, tmp_path)
    proc = subprocess.run([sys.executable, "-m", "lmrl_lightning.cli", *argv], cwd=tmp_path,
                          env=catalogue.subprocess_env(tmp_path), capture_output=True, text=True, timeout=300,
                          stdin=subprocess.DEVNULL)
    category, detail = catalogue.classify(case, tmp_path, proc.returncode, proc.stderr)
    assert category == "clean", f"{name}: {category}: {detail}\n{proc.stderr[-2000:]}"
