"""``hpsearch run``: one worker in this process, or (``--workers N``, ``--gpus``) N local worker processes on
one study.

With ``--gpus 0,1``, worker i sees only GPU ``gpus[i % len(gpus)]`` (``CUDA_VISIBLE_DEVICES``); on the CPU the
cores are divided between the workers (``HPSEARCH_THREADS`` → ``torch.set_num_threads``). A worker that
crashes is reported and the others go on; Ctrl-C / SIGTERM are passed on, so every worker checkpoints and
re-queues its trial. The exit code is non-zero if any worker failed unexpectedly.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from typing import TextIO

from hpsearch.errors import SpecError
from hpsearch.spec import Spec


def parse_gpus(text: str | None) -> list[str] | None:
    """``"0,1"`` → ``["0", "1"]``; None or blank → None; anything but GPU indices is a SpecError."""
    if text is None or not text.strip():
        return None
    ids = [g.strip() for g in text.split(",") if g.strip()]
    bad = [g for g in ids if not (g.isascii() and g.isdigit())]
    if bad:
        raise SpecError(f"--gpus is {text!r}, but must be comma-separated GPU indices such as 0,1 ({bad[0]!r} is not)")
    return ids


def launch_study(spec: Spec, storage_url: str, study_name: str | None, opts, workers: int = 1,
                 gpus: list[str] | None = None, force_spec: bool = False, stream: TextIO = sys.stderr) -> int:
    """Runs the study described by ``spec`` (``opts``: a :class:`hpsearch.runtime.worker.WorkerOptions`): in this process
    for one worker, else creates or continues the study here and starts the workers as processes (one per GPU
    with ``gpus``, unless ``workers`` asks for more); returns the exit code."""
    from hpsearch.inspect.console import summary
    from hpsearch.runtime import worker  # imports torch
    from hpsearch.search.study import open_study
    from hpsearch.storage.urls import open_storage

    if gpus and workers == 1:
        workers = len(gpus)
    if workers == 1:
        return worker.run(spec, storage_url, study_name, opts, stream, force_spec=force_spec)
    spec = opts.apply(spec)
    name = study_name or spec.study.name
    study = open_study(spec, open_storage(storage_url, opts.heartbeat), name, force_spec=force_spec)
    code = launch(workers, storage_url, name, opts.worker_args(), gpus, stream)
    print(summary(study), file=stream, flush=True)
    return code


def launch(n_workers: int, storage_url: str, study_name: str, worker_args: list[str], gpus: list[str] | None,
           stream: TextIO = sys.stderr) -> int:
    cores = os.cpu_count() or 1
    procs: list[subprocess.Popen] = []
    for i in range(n_workers):
        env = os.environ | {"HPSEARCH_NO_LIVE": "1", "HPSEARCH_WORKER": str(i)}
        args = list(worker_args)
        if gpus:
            env["CUDA_VISIBLE_DEVICES"] = gpus[i % len(gpus)]
            args += ["--device", "cuda:0"]
        else:
            env["HPSEARCH_THREADS"] = str(max(1, cores // n_workers))
        cmd = [sys.executable, "-m", "hpsearch.cli", "worker", "--storage", storage_url, "--study", study_name, *args]
        procs.append(subprocess.Popen(cmd, env=env, start_new_session=True))
    print(f"started {n_workers} workers (pids {', '.join(str(p.pid) for p in procs)})", file=stream, flush=True)

    received: list[int] = []

    def forward(signum, _frame):
        received.append(signum)
        for p in procs:
            if p.poll() is None:
                p.send_signal(signum)

    old = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        codes = [p.wait() for p in procs]
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    if received:
        return 128 + received[0]
    failed = [(i, c) for i, c in enumerate(codes) if c != 0]
    for i, c in failed:
        print(f"worker {i} (pid {procs[i].pid}) exited with code {c}", file=stream, flush=True)
    return 1 if failed else 0
