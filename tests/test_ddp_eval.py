"""RolloutEvaluation under 2-process CPU DDP (gloo) plays the same episodes, with the same results, as one process.

tests/ddp_eval_script.py runs in a subprocess (plain `ddp` relaunches the script it runs) once with one device
and once with two; each rank records the episodes it played and the gathered episodes it saw.
"""
import json
from pathlib import Path

import pytest

from ddp_helpers import run_ddp_script
from lmrl_lightning.data.prepare import prepare_task_data

pytestmark = pytest.mark.slow

SCRIPT = Path(__file__).with_name("ddp_eval_script.py")
N_EPISODES = 25 * 2  # the script's N_EPISODES: 2 from each maze start


def run_script(data_dir: Path, out_dir: Path, devices: int) -> list[dict]:
    """Run the script on `devices` processes; the per-rank records, rank 0 first."""
    out_dir.mkdir()
    proc = run_ddp_script(SCRIPT, [data_dir, out_dir, devices], timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return [json.loads((out_dir / f"rank{r}.json").read_text()) for r in range(devices)]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The script's records with 1 and with 2 processes, on the same small maze dataset."""
    root = tmp_path_factory.mktemp("ddp_eval")
    prepare_task_data("maze", "fo", root / "data", n_episodes=20, vocab_size=300, progress=False)
    return run_script(root / "data", root / "one", 1), run_script(root / "data", root / "two", 2)


def test_two_processes_give_the_same_episodes_as_one(runs):
    """Per-episode seeds, moves, returns and lengths, and the summary, equal the 1-process run's exactly."""
    (single,), (rank0, rank1) = runs
    assert single["world_size"] == 1 and rank0["world_size"] == rank1["world_size"] == 2
    assert rank0["episodes"] == single["episodes"]
    assert rank0["summaries"] == single["summaries"]
    assert len(single["summaries"]) == 1 and single["summaries"][0]["n_episodes"] == N_EPISODES
    # the comparison means something only if the episodes differ from one another
    assert len({(e["return"], e["length"]) for e in single["episodes"]}) > 1


def test_every_episode_is_played_once_and_gathered_on_every_rank(runs):
    """Ranks play disjoint halves (rank::world_size) that together cover every episode; both gather all of them."""
    (single,), (rank0, rank1) = runs
    assert [e["index"] for e in single["episodes"]] == list(range(N_EPISODES))
    assert sorted(single["played"]) == list(range(N_EPISODES))
    assert rank0["played"] == list(range(0, N_EPISODES, 2))
    assert rank1["played"] == list(range(1, N_EPISODES, 2))
    assert rank1["episodes"] == rank0["episodes"]
    assert rank1["summaries"] == rank0["summaries"]
