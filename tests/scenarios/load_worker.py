"""A trivial Optuna worker for the storage load test: trials that only report, through hpsearch's storage layer.

    python tests/scenarios/load_worker.py URL STUDY N_TRIALS N_REPORTS
"""

from __future__ import annotations

import sys

import optuna

from hpsearch.storage.urls import open_storage


def main() -> None:
    url, name, n_trials, n_reports = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.load_study(study_name=name, storage=open_storage(url))

    def objective(trial: optuna.Trial) -> float:
        x = trial.suggest_float("x", 0, 1)
        for step in range(1, n_reports + 1):
            trial.report(x * step, step)
            trial.should_prune()
        return x

    study.optimize(objective, n_trials=n_trials)  # no `catch`: any storage error fails the process


if __name__ == "__main__":
    main()
