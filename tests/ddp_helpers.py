"""Running a 2-process CPU DDP script from a test (plain `ddp` relaunches the script it runs)."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_ddp_script(script: Path, args: list[str], timeout: int = 300) -> subprocess.CompletedProcess:
    """Run `script` with a fresh rendezvous port. Once here, on a 2-core machine loaded by another job, gloo aborted
    rank 0 mid-evaluation with "terminate called without an active exception" and no Python error (reruns passed):
    such a crash is retried once; any other failure is returned as it is."""
    for attempt in range(2):
        env = {
            **os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
            "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port()),
        }
        proc = subprocess.run([sys.executable, str(script), *map(str, args)], env=env, capture_output=True, text=True,
                              timeout=timeout)
        aborted = proc.returncode == -signal.SIGABRT and "terminate called without an active exception" in proc.stderr
        if not aborted:
            return proc
    return proc
