"""Two processes, two CPU devices each, as one 4-device JAX program (``jax.distributed`` with
gloo collectives): data-parallel training, an orbax checkpoint of the replicated state written
by both processes, and a resume that continues bit-identically."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

WORKER = Path(__file__).with_name("_multiprocess_worker.py")
ROOT = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_checkpoint_and_resume_the_data_parallel_state(tmp_path):
    port, directory = str(_free_port()), str(tmp_path / "ckpt")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("XLA_FLAGS", None)
    procs = [
        subprocess.Popen(
            [sys.executable, str(WORKER), str(i), port, directory],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for i in range(2)
    ]
    reports = []
    try:
        for p in procs:
            out, err = p.communicate(timeout=300)
            assert p.returncode == 0, err[-3000:]
            reports.append(json.loads(out.strip().splitlines()[-1]))
    finally:
        for p in procs:
            p.kill()
    assert sorted(r["process"] for r in reports) == [0, 1]
    for r in reports:
        assert r["processes"] == 2 and r["devices"] == 4
        assert r["global_leaves"] > 0  # the state really spans both processes
        assert r["restored_equal"] and r["restored_replicated"]
        assert r["resumed_equal"]  # resumed epoch == uninterrupted epoch, bit for bit
        assert r["other_fingerprint_refused"]
        assert r["step"] == 8  # two epochs of 4 steps
