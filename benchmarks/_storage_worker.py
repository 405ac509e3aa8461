"""One worker process of the storage scale benchmark: short trials that only report, timed per call.

    python benchmarks/_storage_worker.py URL STUDY N_TRIALS N_REPORTS WORKDIR INDEX PARENT_PID

It imports Optuna and ``hpsearch.storage`` only (no torch), so 32 of them fit on a small machine. The storage
is opened the way ``hpsearch worker`` opens it (``open_storage(url)``: default heartbeat on RDB storages, the
retrying wrapper), and each trial runs through ``study.optimize(n_trials=1, catch=(Exception,))`` as there.
After connecting it writes ``WORKDIR/ready-INDEX`` and waits for ``WORKDIR/go``, so all workers of a cell
start together (it gives up if PARENT_PID is no longer its parent). At the end it writes
``WORKDIR/result-INDEX.json``: per-call latencies (s) of ``trial.report`` + ``trial.should_prune``, the values
it wrote (trial number → {step: value}), errors by kind, and the start/end of its measured window
(``time.monotonic``: system-wide on Linux, so windows compare across processes).
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections import Counter
from pathlib import Path

import optuna

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from hpsearch.storage import open_storage  # noqa: E402

GO_POLL_S = 0.01


def _kind(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0][:160] if text else ''}".rstrip(": ")


def main() -> None:
    url, name, n_trials, n_reports, workdir, index, parent = sys.argv[1:8]
    n_trials, n_reports, workdir, parent = int(n_trials), int(n_reports), Path(workdir), int(parent)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    # RandomSampler: the benchmark times the storage, not TPE's sampling; MedianPruner as the brief's default
    study = optuna.load_study(study_name=name, storage=open_storage(url),
                              sampler=optuna.samplers.RandomSampler(), pruner=optuna.pruners.MedianPruner())
    (workdir / f"ready-{index}").touch()
    while not (workdir / "go").exists():
        if os.getppid() != parent:  # the benchmark died before the start: do not wait forever
            sys.exit("storage worker: the benchmark process is gone")
        time.sleep(GO_POLL_S)

    latencies: list[float] = []
    written: dict[int, dict[int, float]] = {}
    errors: Counter[str] = Counter()
    prune_votes = 0

    def objective(trial: optuna.Trial) -> float:
        nonlocal prune_votes
        x = trial.suggest_float("x", 0.0, 1.0)
        values = written.setdefault(trial.number, {})
        for step in range(1, n_reports + 1):
            value = x * step
            t = time.perf_counter()
            try:
                trial.report(value, step)
                values[step] = value
                # the verdict is counted, not obeyed: every trial makes all its reports
                prune_votes += bool(trial.should_prune())
            except Exception as e:  # a storage error: count it and go on, as a robust worker would
                errors[_kind(e)] += 1
                continue
            latencies.append(time.perf_counter() - t)
        return x

    start = time.monotonic()
    for _ in range(n_trials):
        try:
            # catch: a failing objective marks the trial FAIL and the loop goes on, as in hpsearch's worker;
            # errors creating or finishing the trial in the storage still raise and are counted here
            study.optimize(objective, n_trials=1, catch=(Exception,))
        except Exception as e:
            errors[_kind(e)] += 1
    end = time.monotonic()
    out = {"latencies_s": latencies, "written": written, "errors": dict(errors), "prune_votes": prune_votes,
           "start": start, "end": end}
    tmp = workdir / f"result-{index}.json.tmp"
    tmp.write_text(json.dumps(out))
    tmp.rename(workdir / f"result-{index}.json")


if __name__ == "__main__":
    main()
