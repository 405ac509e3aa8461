"""One worker process of the storage scale benchmark: short trials that only report, timed per call.

    python benchmarks/_storage_worker.py URL STUDY N_TRIALS N_REPORTS WORKDIR INDEX PARENT_PID

It imports Optuna and ``hpsearch.storage.urls`` only (no torch), so 32 of them fit on a small machine. The storage
is opened the way ``hpsearch worker`` opens it (``open_storage(url)``: default heartbeat on RDB storages, the
retrying wrapper), and each trial runs through ``study.optimize(n_trials=1, catch=(Exception,))`` as there.
After connecting it writes ``WORKDIR/ready-INDEX`` and waits for ``WORKDIR/go``, so all workers of a cell
start together (it gives up if PARENT_PID is no longer its parent). At the end it writes
``WORKDIR/result-INDEX.json``: per-call latencies (s) of ``trial.report`` + ``trial.should_prune``, the values
it wrote (trial number → {step: value}), errors by kind, and the start/end of its measured window
(``time.monotonic``: system-wide on Linux, so windows compare across processes).

It also counts what a clean "0 errors" can hide, and logs each event to ``WORKDIR/log-INDEX.txt``:

- retries: the warnings of ``hpsearch.storage.retry.RetryingStorage`` ("storage: %s failed (%s); retrying
  …", logger ``hpsearch``), by storage method and exception type; other ``hpsearch`` warnings (a heartbeat
  not recorded, a connection retried at open) by kind;
- database errors: every exception SQLAlchemy sees from the driver (its ``handle_error`` event, on every
  engine of the process, heartbeat thread included), whether then retried, raised or handled by the pool;
  "database is locked", lock-wait timeouts and deadlocks among them are counted as lock events.

What it cannot count: waits inside the database for a lock. SQLite waits up to its busy timeout (60 s,
``hpsearch.storage.urls``) inside ``sqlite3`` before "database is locked" is raised, PostgreSQL and MariaDB wait for
row locks in the server, and Optuna's journal file lock spins in Python without a trace; such waits show
only as latency.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import time
from collections import Counter
from pathlib import Path

import optuna
import sqlalchemy

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from hpsearch.storage.urls import open_storage  # noqa: E402

GO_POLL_S = 0.01
LOCK = re.compile(r"database is locked|lock wait timeout|deadlock", re.IGNORECASE)


def _kind(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0][:160] if text else ''}".rstrip(": ")


class Events(logging.Handler):
    """Counts hpsearch's warnings and the database errors SQLAlchemy sees; writes each one to ``log``."""

    def __init__(self, log):
        super().__init__(logging.WARNING)
        self.log = log
        self.retries: Counter[str] = Counter()  # "method (ExceptionType)" → attempts that failed and were retried
        self.warnings: Counter[str] = Counter()  # other hpsearch warnings, by their message template
        self.db_errors: Counter[str] = Counter()  # driver exceptions by kind
        self.locks = 0

    def write(self, line: str) -> None:
        self.log.write(f"{time.monotonic():.3f} {line}\n")
        self.log.flush()

    def emit(self, record: logging.LogRecord) -> None:
        if str(record.msg).startswith("storage: %s failed") and len(record.args or ()) >= 2:
            self.retries[f"{record.args[0]} ({record.args[1]})"] += 1
        else:
            self.warnings[str(record.msg).split("(")[0].strip()] += 1
        self.write(f"{record.levelname} {record.name}: {record.getMessage()}")

    def on_db_error(self, context) -> None:  # sqlalchemy.engine.ExceptionContext
        kind = _kind(context.original_exception)
        self.db_errors[kind] += 1
        self.locks += bool(LOCK.search(kind))
        self.write(f"DBERROR {kind}")


def main() -> None:
    url, name, n_trials, n_reports, workdir, index, parent = sys.argv[1:8]
    n_trials, n_reports, workdir, parent = int(n_trials), int(n_reports), Path(workdir), int(parent)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    with open(workdir / f"log-{index}.txt", "w") as log:
        events = Events(log)
        logging.getLogger("hpsearch").addHandler(events)
        sqlalchemy.event.listen(sqlalchemy.engine.Engine, "handle_error", events.on_db_error)
        events.write(f"worker {index} pid {os.getpid()}: {n_trials} trials × {n_reports} reports")
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
                    events.write(f"ERROR trial {trial.number} step {step}: {_kind(e)}")
                    continue
                latencies.append(time.perf_counter() - t)
            return x

        start = time.monotonic()
        events.write("go")
        for _ in range(n_trials):
            try:
                # catch: a failing objective marks the trial FAIL and the loop goes on, as in hpsearch's worker;
                # errors creating or finishing the trial in the storage still raise and are counted here
                study.optimize(objective, n_trials=1, catch=(Exception,))
            except Exception as e:
                errors[_kind(e)] += 1
                events.write(f"ERROR trial: {_kind(e)}")
        end = time.monotonic()
        lat = sorted(latencies)
        p50 = f"{lat[len(lat) // 2] * 1000:.1f}" if lat else "-"
        events.write(f"done: {len(written)} trials, {len(latencies)} reports in {end - start:.2f} s (p50 {p50} ms), "
                     f"{sum(errors.values())} errors, {sum(events.retries.values())} retries, "
                     f"{sum(events.db_errors.values())} database errors ({events.locks} lock events), "
                     f"{sum(events.warnings.values())} other warnings")
        out = {"latencies_s": latencies, "written": written, "errors": dict(errors), "prune_votes": prune_votes,
               "start": start, "end": end, "retries": dict(events.retries), "warnings": dict(events.warnings),
               "db_errors": dict(events.db_errors), "lock_events": events.locks}
        tmp = workdir / f"result-{index}.json.tmp"
        tmp.write_text(json.dumps(out))
        tmp.rename(workdir / f"result-{index}.json")

if __name__ == "__main__":
    main()
