"""hpsearch.inspect.console: the eval-point count it prints is the loop's (one function, hpsearch.spec.n_evals),
also where floating point makes max_epochs / eval_every a hair above an integer (3 / 0.3 = 10.000000000000002)."""

from __future__ import annotations

import io
from types import SimpleNamespace

import optuna
import pytest
from conftest import run_cli

from hpsearch.inspect.console import Progress
from hpsearch.spec import n_evals
from studies import write_study


@pytest.mark.parametrize(("max_epochs", "eval_every", "expected"),
                         [(3, 0.3, 10), (1, 0.5, 2), (2, 0.3, 7), (5, 1.0, 5), (1, 1.0, 1), (6, 0.5, 12)])
def test_n_evals_is_the_ceiling_of_epochs_over_eval_every(max_epochs, eval_every, expected):
    assert n_evals(max_epochs, eval_every) == expected


def test_the_console_prints_k_of_ten_for_three_epochs_at_eval_every_0_3():
    out = io.StringIO()
    progress = Progress(out, live=False)
    progress.trial_started(0, {"lr": 0.01}, SimpleNamespace(max_epochs=3, eval_every=0.3, batch_size=32))
    for k in (1, 10):
        progress.on_eval(SimpleNamespace(step=k, epoch=min(3.0, 0.3 * k), top1=50.0, top5=90.0, train_loss=1.0,
                                         images_per_s=100.0))
    assert "trial 0 eval 1/10 " in out.getvalue() and "trial 0 eval 10/10 " in out.getvalue()


@pytest.mark.slow
def test_a_study_with_three_epochs_at_eval_every_0_3_prints_and_stores_ten_points(tmp_path):
    """Through the real CLI: every eval line says k/10 and the trial stores 10 intermediate values."""
    write_study(tmp_path / "s.toml", name="tenths", n_trials=1, train={"max_epochs": 3, "eval_every": 0.3})
    url = f"sqlite:///{tmp_path / 's.db'}"
    r = run_cli("run", "s.toml", "--storage", url, cwd=tmp_path, env={"HPSEARCH_NO_LIVE": "1"})
    assert r.returncode == 0, r.stderr[-2000:]
    lines = [line for line in (r.stdout + r.stderr).splitlines() if " eval " in line]
    assert [line.split(" eval ")[1].split()[0] for line in lines] == [f"{k}/10" for k in range(1, 11)], lines
    trial = optuna.load_study(study_name="tenths", storage=url).trials[0]
    assert trial.state.name == "COMPLETE" and sorted(trial.intermediate_values) == list(range(1, 11))
