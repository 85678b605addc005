"""Bad inputs through the real `lmrl` command (issue 12): every case of `tests/bad_input_cases.py` as a subprocess.

Each case runs `python -m lmrl_lightning.cli ARGV` in its own empty directory (also its working directory; caches
such as TORCH_HOME and HF_MODULES_CACHE point inside it) and is classified clean / traceback / silent / usage-dump /
hang / code-executed / side-effect / unclear (definitions in tests/bad_input_cases.py). The valid inputs the cases
start from (a 20-episode maze dataset, 2-step BC and ILQL checkpoints, an export) are built first with the same
command. A local HTTP server serves a pickle payload for the URL code-execution cases.

    .venv/bin/python benchmarks/bad_inputs.py                      # all cases, 2 at a time
    .venv/bin/python benchmarks/bad_inputs.py --only eval- --jobs 1 --out /tmp/eval.json
"""
from __future__ import annotations

import argparse
import datetime
import json
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import bad_input_cases as catalogue  # noqa: E402

COMMAND = [sys.executable, "-m", "lmrl_lightning.cli"]
CODE: dict[str, str] = {}  # --code: PYTHONPATH of another source tree (a "before" baseline of an older commit)


def run_lmrl(argv: list[str], cwd: Path, timeout: float):
    """(exit code or None on timeout, stdout, stderr, seconds)."""
    start = time.perf_counter()
    try:
        env = {**catalogue.subprocess_env(cwd), **CODE}
        proc = subprocess.run(COMMAND + argv, cwd=cwd, env=env, capture_output=True,
                              timeout=timeout, stdin=subprocess.DEVNULL)
        code, out, err = proc.returncode, proc.stdout, proc.stderr
    except subprocess.TimeoutExpired as e:
        code, out, err = None, e.stdout or b"", e.stderr or b""
    return (code, out.decode("utf-8", "replace"), err.decode("utf-8", "replace"), time.perf_counter() - start)


def run_case(case: catalogue.Case, fx: catalogue.Fixtures, work: Path, timeout: float) -> dict:
    d = work / catalogue.safe_name(case.name)
    d.mkdir(parents=True)
    row = {"name": case.name, "kind": case.kind, "keywords": list(case.keywords), "note": case.note}
    try:
        argv = case.build(fx, d)
        if not (isinstance(argv, list) and all(isinstance(a, str) for a in argv)):
            raise TypeError(f"the case built {argv!r}, not a list of str")
    except Exception as e:  # noqa: BLE001 - a broken case, not a result of lmrl
        return {**row, "category": "harness-error", "detail": f"{type(e).__name__}: {str(e)[:300]}", "argv": None}
    code, out, err, seconds = run_lmrl(argv, d, timeout)
    category, detail = catalogue.classify(case, d, code, err, timed_out=code is None)
    shown = [a if len(a) < 300 else a[:120] + f"...({len(a)} chars)" for a in argv]
    return {**row, "argv": [a.replace(str(work), "$CASES").replace(str(fx.root), "$FIXTURES") for a in shown],
            "category": category, "detail": detail, "exit_code": code, "seconds": round(seconds, 1),
            "stderr_lines": len([l for l in err.splitlines() if l.strip()]), "stderr_tail": err[-1500:]}


def git_commit() -> str:
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True).stdout.strip()
        return commit + ("+uncommitted changes" if dirty else "")
    except OSError:
        return "unknown"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default=None, metavar="SUBSTRING[,SUBSTRING...]",
                        help="run the cases whose name contains one of these")
    parser.add_argument("--merge", action="store_true",
                        help="replace only the rows of the cases run in an existing --out file (totals recomputed)")
    parser.add_argument("--jobs", type=int, default=2, help="cases run at the same time")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per case before it counts as a hang")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "bad_inputs.json"))
    parser.add_argument("--fixtures", default=None, help="reuse (or build into) this fixture directory")
    parser.add_argument("--keep", action="store_true", help="keep the case directories (printed at the end)")
    parser.add_argument("--code", default=None, metavar="DIR",
                        help="run the lmrl_lightning of this source tree (PYTHONPATH=DIR; e.g. `git archive COMMIT` "
                             "unpacked, with lmrl_lightning/tasks and lmrl_lightning/callbacks linked to ../tasks, "
                             "../callbacks) instead of the installed one")
    parser.add_argument("--commit", default=None, help="the commit --code holds, for the record")
    args = parser.parse_args()
    if args.code:
        CODE["PYTHONPATH"] = str(Path(args.code).resolve())

    only = args.only.split(",") if args.only else None
    cases = [c for c in catalogue.cases() if only is None or any(o in c.name for o in only)]
    if not cases:
        print(f"no case matches {args.only!r}", file=sys.stderr)
        return 2
    tmp = Path(tempfile.mkdtemp(prefix="lmrl_bad_inputs_"))
    fixture_root = Path(args.fixtures) if args.fixtures else tmp / "fixtures"
    started = time.perf_counter()
    if (fixture_root / "export" / "lmrl.json").is_file():
        fx = catalogue.Fixtures(fixture_root, fixture_root / "maze_fo", fixture_root / "bc.ckpt",
                                fixture_root / "ilql.ckpt", fixture_root / "export")
    else:
        def run_fixture(argv, cwd):
            code, out, err, _ = run_lmrl(argv, cwd, 600)
            if code != 0:
                print(err[-3000:], file=sys.stderr)
            return code

        fx = catalogue.build_fixtures(fixture_root, run_fixture)
    fixture_seconds = time.perf_counter() - started
    fx.payload_url, server = catalogue.serve_payload(tmp / "payload")
    print(f"fixtures in {fixture_seconds:.0f} s; {len(cases)} cases, {args.jobs} at a time", flush=True)

    rows = []
    partial = Path(args.out + ".partial.jsonl")  # each row as it finishes (removed when the run completes)
    partial.unlink(missing_ok=True)
    try:
        with ThreadPoolExecutor(args.jobs) as pool:
            futures = {pool.submit(run_case, c, fx, tmp / "cases", args.timeout): c for c in cases}
            for future in as_completed(futures):
                try:
                    row = future.result()
                except Exception as e:  # noqa: BLE001 - keep the other rows
                    case = futures[future]
                    row = {"name": case.name, "kind": case.kind, "category": "harness-error",
                           "detail": f"{type(e).__name__}: {str(e)[:300]}"}
                rows.append(row)
                with open(partial, "a", encoding="utf-8") as f:
                    f.write(json.dumps(row) + "\n")
                print(f"[{len(rows):3d}/{len(cases)}] {row['category']:13s} {row['name']}: {row['detail'][:160]}",
                      flush=True)
    finally:
        server.shutdown()
    merged_from = None
    if args.merge and Path(args.out).is_file():
        previous = json.loads(Path(args.out).read_text(encoding="utf-8"))
        merged_from = {k: previous.get(k) for k in ("command", "git_commit", "date", "code")}
        fresh = {r["name"] for r in rows}
        rows += [r for r in previous["rows"] if r["name"] not in fresh]
    order = {c.name: i for i, c in enumerate(catalogue.cases())}
    rows.sort(key=lambda r: order.get(r["name"], len(order)))
    totals = Counter(r["category"] for r in rows)
    by_kind: dict[str, Counter] = {}
    for r in rows:
        by_kind.setdefault(r["kind"], Counter())[r["category"]] += 1
    result = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "lmrl_command": " ".join(["python", "-m", "lmrl_lightning.cli"]),
        "git_commit": args.commit or git_commit(),
        "code": CODE.get("PYTHONPATH", "installed lmrl_lightning (this checkout)"),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"python": platform.python_version(), "platform": platform.platform()},
        "timeout_s": args.timeout,
        "jobs": args.jobs,
        "definition": catalogue.__doc__.split("A case builds", 1)[1].strip(),
        "cases": len(rows),
        "totals": {k: totals.get(k, 0) for k in (*catalogue.CATEGORIES, "harness-error") if totals.get(k, 0) or
                   k in catalogue.CATEGORIES},
        "clean_fraction": round(totals.get("clean", 0) / len(rows), 3),
        "by_kind": {k: dict(v) for k, v in sorted(by_kind.items())},
        "fixture_seconds": round(fixture_seconds, 1),
        "wall_seconds": round(time.perf_counter() - started, 1),
        "rows": rows,
    }
    if merged_from:
        result["merged_into"] = merged_from
        result["merged_cases"] = sorted(r["name"] for r in rows if r["name"] in {c.name for c in cases})
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    partial.unlink(missing_ok=True)
    print(json.dumps(result["totals"]), f"-> {args.out}")
    if args.keep:
        print(f"case directories kept in {tmp}")
    else:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
