"""Time and peak memory of reading a large episode file: memory must not grow with the file (issue 12).

Writes JSONL files of ordinary maze episodes (a pool of generated FO and PO episodes, cycled) of each size in
`--sizes-mb`, then, each in a fresh subprocess, measures the validation pass (`iter_episodes` over every line,
as `EpisodeDataModule.setup`'s first pass and `lmrl data` do) and a subprocess that only imports the same
modules, for the baseline. Each child reports its RSS before the work and its peak RSS during the work.
Optionally (`--datamodule-mb`) it also sets
up `EpisodeDataModule` on a smaller file: its token chunks are kept in memory for training, so that figure
does grow with the data (about 15 bytes a token in the packed `ChunkStore`).

Run:  python benchmarks/dataset_memory.py --sizes-mb 100 1000 --datamodule-mb 100
      (writes benchmarks/results/dataset_memory.json)
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import RESULTS_DIR, command_line, machine_info, markdown_table, write_json  # noqa: E402

# Each child runs its setup code, resets the peak RSS, runs its work code and prints one JSON line: seconds,
# items read, RSS before the work and peak RSS during it, in MiB. The peak of the work alone is
# /proc/self/status's VmHWM after writing 5 to /proc/self/clear_refs (Linux >= 4.0); `ru_maxrss` would not do:
# Linux carries it over from the parent at exec.
CHILD = {
    "imports only": ("", "extra = {}"),
    "validation pass (iter_episodes)": ("", """
for episode in iter_episodes(PATH):
    n += 1
extra = {}
"""),
    "EpisodeDataModule.setup (validate + tokenise)": ("""
from array import array
from lmrl_lightning.data.datamodule import EpisodeDataModule
from lmrl_lightning.models.backbone import BackboneConfig, load_tokenizer
dm = EpisodeDataModule(PATH, task="maze", variant="fo", window=1, val_fraction=0.05)
dm.attach_tokenizer(load_tokenizer(BackboneConfig("tiny", tokenizer=TOKENIZER)))
""", """
dm.setup("fit")
n = len(dm.train_chunks) + len(dm.val_chunks)
views = (dm.train_chunks, dm.val_chunks)  # ChunkViews (an index array each) over one or more ChunkStores
stores = list({id(v.store): v.store for v in views}.values())
arrays = [a for store in stores for a in vars(store).values() if isinstance(a, array)] + [v.indices for v in views]
extra = {"tokens": sum(len(store.tokens) for store in stores),
         "chunk_store_mib": sum(a.itemsize * len(a) for a in arrays) / 2**20}
"""),
}
CHILD_TEMPLATE = """
import json, sys, time
from lmrl_lightning.data.jsonl import iter_episodes
PATH, TOKENIZER = sys.argv[1], sys.argv[2]
def status_mib(key):
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
{setup}
rss_before = status_mib("VmRSS")
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")
n, start = 0, time.perf_counter()
{work}
print(json.dumps({{"seconds": time.perf_counter() - start, "items": n, "rss_before_mib": rss_before,
                  "work_peak_rss_mib": status_mib("VmHWM"), **extra}}))
"""


def episode_pool(workdir: Path, n_episodes: int) -> list[str]:
    """JSONL lines of generated maze episodes (FO and PO), and the tokenizer `lmrl data` trains on them."""
    from lmrl_lightning.data.prepare import prepare_task_data

    lines = []
    for variant in ("fo", "po"):
        out = workdir / f"pool_{variant}"
        prepare_task_data("maze", variant, out, n_episodes=n_episodes, seed=0, vocab_size=512, progress=False)
        lines += (out / "train.jsonl").read_text(encoding="utf-8").splitlines()
    return lines


def write_file(path: Path, lines: list[str], size_mb: int) -> dict[str, int]:
    """Cycle the pool's lines into `path` until it holds `size_mb` MiB."""
    target, written, count = size_mb << 20, 0, 0
    with open(path, "w", encoding="utf-8") as f:
        for line in itertools.cycle(lines):
            if written >= target:
                break
            written += f.write(line + "\n")
            count += 1
    return {"bytes": path.stat().st_size, "episodes": count}


def measure(kind: str, path: Path, tokenizer: Path) -> dict[str, float]:
    setup, work = CHILD[kind]
    code = CHILD_TEMPLATE.format(setup=setup, work=work)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    started = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code, str(path), str(tokenizer)], env=env, check=True,
                         capture_output=True, text=True)
    report = json.loads(out.stdout.strip().splitlines()[-1])
    report["process_seconds"] = time.perf_counter() - started
    return report


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes-mb", type=int, nargs="+", default=[100, 1000], help="file sizes for the validation pass")
    p.add_argument("--datamodule-mb", type=int, default=0, help="also set up EpisodeDataModule on a file this size")
    p.add_argument("--pool-episodes", type=int, default=2000, help="generated episodes per variant, then cycled")
    p.add_argument("--workdir", default=None, help="where the files are written (default: a temporary directory)")
    p.add_argument("--results", default=str(RESULTS_DIR / "dataset_memory.json"))
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
        workdir = Path(tmp)
        lines = episode_pool(workdir, args.pool_episodes)
        tokenizer = workdir / "pool_fo" / "tokenizer"
        runs = [("imports only", 0)] + [("validation pass (iter_episodes)", s) for s in args.sizes_mb]
        if args.datamodule_mb:
            runs.append(("EpisodeDataModule.setup (validate + tokenise)", args.datamodule_mb))
        rows, files = [], {0: {"bytes": 0, "episodes": 0}}
        for kind, size_mb in runs:
            path = workdir / f"episodes_{size_mb}mb.jsonl"
            if size_mb not in files:
                files[size_mb] = write_file(path, lines, size_mb)
            rows.append({"measure": kind, "size_mb": size_mb, **files[size_mb], **measure(kind, path, tokenizer)})
            print(json.dumps(rows[-1]), flush=True)
    table = markdown_table(
        ["measure", "file MiB", "episodes", "seconds", "MiB/s", "RSS before MiB", "peak RSS MiB", "kept in memory"],
        [[r["measure"], r["size_mb"], r["episodes"], f"{r['seconds']:.1f}",
          f"{r['bytes'] / 2**20 / r['seconds']:.1f}" if r["bytes"] else "", f"{r['rss_before_mib']:.0f}",
          f"{r['work_peak_rss_mib']:.0f}",
          f"{r['items']} chunks, {r['tokens']} tokens: {r['chunk_store_mib']:.0f} MiB" if "tokens" in r else ""]
         for r in rows],
    )
    print(table)
    write_json(Path(args.results), {"command": command_line(), "machine": machine_info(), "runs": rows,
                                    "markdown": table})


if __name__ == "__main__":
    main()
