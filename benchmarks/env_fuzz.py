"""Environment fuzzing (issue 12): every registered task's env stepped with >= 10k fuzzed actions per variant.

The actions, the documented behaviour and the checks are those of tests/env_fuzzing.py (random unicode, empty,
1M-character, control characters, lone surrogates, valid actions with and without the end-of-turn newline,
forged histories, steps after done). Writes benchmarks/results/env_fuzz.json: per task and variant the actions,
episodes, rewards seen, documented and undocumented exceptions, other violations and the time. Exit code 1 when
any undocumented exception or violation was seen.

    .venv/bin/python benchmarks/env_fuzz.py [--actions 10000] [--seed 0]
"""
from __future__ import annotations

import argparse
import datetime
import json
import platform
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import env_fuzzing  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--actions", type=int, default=10_000, help="fuzzed actions per task variant")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "env_fuzz.json"))
    args = parser.parse_args()
    rows = []
    for i, (task, variant, label, kwargs) in enumerate(env_fuzzing.targets()):
        result = env_fuzzing.fuzz_env(task, variant, args.actions, args.seed + 1000 * i, kwargs, label)
        row = result.as_dict()
        rows.append(row)
        print(f"{task} {label}: {row['actions']} actions, {row['episodes']} episodes, {row['seconds']} s, "
              f"rewards {row['rewards_seen']}, documented {row['documented_exceptions']}, "
              f"undocumented {row['undocumented_exceptions']}, violations {row['violations']}", flush=True)
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    result = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "git_commit": commit,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"python": platform.python_version(), "platform": platform.platform()},
        "seed": args.seed,
        "contract": env_fuzzing.__doc__.split("Documented behaviour", 1)[1].strip(),
        "totals": {
            "actions": sum(r["actions"] for r in rows),
            "undocumented_exceptions": sum(sum(r["undocumented_exceptions"].values()) for r in rows),
            "violations": sum(sum(r["violations"].values()) for r in rows),
            "seconds": round(sum(r["seconds"] for r in rows), 1),
        },
        "rows": rows,
    }
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    print(json.dumps(result["totals"]), f"-> {args.out}")
    return 1 if result["totals"]["undocumented_exceptions"] or result["totals"]["violations"] else 0


if __name__ == "__main__":
    sys.exit(main())
