"""hpsearch.inspect.collect and .report: the collect functions on empty, only-failed and normal studies, layouts, write_report."""

from __future__ import annotations

import json

import optuna
import pytest
from optuna.trial import TrialState

from hpsearch.errors import SpecError
from hpsearch.inspect import collect, report

optuna.logging.set_verbosity(optuna.logging.WARNING)
SECRET_URL = "postgresql+psycopg://alice:hunter2pw@db.example/hp"


def make_study(tmp_path, kind: str = "normal", name: str = "demo") -> optuna.Study:
    """kind: "empty", "failed" (3 FAIL trials) or "normal": trials 0-3 COMPLETE with final Top-1
    50, 70, 60, 80 over 4 evals; trial 4 PRUNED after step 1; trial 5 PRUNED after step 2; trial 6 FAIL."""
    study = optuna.create_study(storage=f"sqlite:///{tmp_path}/{name}.db", study_name=name, direction="maximize")
    spec = {"study": {"name": name, "storage": SECRET_URL}, "train": {"max_epochs": 4, "eval_every": 1.0}}
    study.set_user_attr("hpsearch.spec", json.dumps(spec))
    study.set_user_attr("hpsearch.versions", {"hpsearch": "0.1.0", "optuna": optuna.__version__})
    if kind == "empty":
        return study
    plan = [(TrialState.FAIL, 1)] * 3 if kind == "failed" else (
        [(TrialState.COMPLETE, v) for v in (50, 70, 60, 80)]
        + [(TrialState.PRUNED, 1), (TrialState.PRUNED, 2), (TrialState.FAIL, 0)])
    for state, v in plan:
        t = study.ask()
        arch = t.suggest_categorical("arch", ["lenet", "resnet"])
        lr = t.suggest_float("lr", 1e-4, 1e-1, log=True)
        bs = t.suggest_categorical("batch_size", [32, 64, 128])
        aug = t.suggest_float("aug_strength", 0.0, 1.0)
        cfg = {"arch": arch, "lr": lr, "batch_size": bs, "aug_strength": aug, "max_epochs": 4}
        t.set_user_attr("config", cfg)
        t.set_user_attr("device", "cpu")
        if state == TrialState.COMPLETE:
            for step in range(1, 5):
                t.report(v * step / 4, step)
            t.set_user_attr("val_top1", v)
            t.set_user_attr("val_top5", min(100, v + 15))
            t.set_user_attr("epochs_completed", 4)
            t.set_user_attr("wall_s", 10.0 + v)
            study.tell(t, v)
        elif state == TrialState.PRUNED:
            for step in range(1, v + 1):
                t.report(10.0 * step, step)
            t.set_user_attr("epochs_completed", v)
            t.set_user_attr("reason", "pruned")
            study.tell(t, state=TrialState.PRUNED)
        else:
            t.set_user_attr("reason", f"RuntimeError: could not connect to {SECRET_URL}")
            study.tell(t, state=TrialState.FAIL)
    return study


@pytest.fixture(params=["empty", "failed", "normal"])
def any_study(request, tmp_path):
    return make_study(tmp_path, request.param)


def trials_of(study):
    return study.get_trials(deepcopy=False)


# ---- collect functions on every kind of study -----------------------------------------------------------


def test_every_panel_builds_for_every_kind_of_study(any_study):
    """Each panel of the default layout yields figures or a note, never an exception."""
    trials, info = trials_of(any_study), collect.study_info(any_study)
    for panel in report.load_layout("overview"):
        out = report.build_panel(panel, trials, info)
        assert isinstance(out, str | list) and out, panel["kind"]


def test_collect_on_empty_and_failed_studies_returns_empty_data(tmp_path):
    for kind in ("empty", "failed"):
        trials = trials_of(make_study(tmp_path, kind, name=kind))
        assert collect.collect_history(trials) == {"number": [], "value": [], "best": []}
        assert collect.collect_anytime(trials) == {"seconds": [], "best": []}
        assert collect.collect_curves(trials)["groups"] == {}
        assert collect.collect_importance(trials)["importance"] == {}
        assert collect.collect_parallel(trials)["value"] == []
        assert collect.collect_slices(trials, ["lr"]) == {}
        assert collect.collect_arch(trials) == {}
        assert collect.collect_savings(trials, 4.0)["percent_saved"] is None
        assert collect.collect_leaderboard(trials) == []
        header = collect.collect_header(trials, collect.study_info(make_study(tmp_path, "empty", name=kind + "2")))
        assert header["states"]["FAIL"] == (3 if kind == "failed" else 0)


def test_history_and_anytime_best_so_far_is_monotone(tmp_path):
    trials = trials_of(make_study(tmp_path))
    h = collect.collect_history(trials)
    assert h["number"] == [0, 1, 2, 3] and h["value"] == [50, 70, 60, 80]
    assert h["best"] == [50, 70, 70, 80]
    a = collect.collect_anytime(trials)
    assert a["best"] == [50, 70, 70, 80]
    assert all(x <= y for x, y in zip(a["seconds"], a["seconds"][1:], strict=False)) and a["seconds"][0] >= 0


def test_curves_group_by_state_and_downsample(tmp_path):
    trials = trials_of(make_study(tmp_path))
    c = collect.collect_curves(trials, eval_every=0.5)
    assert c["groups"]["COMPLETE"]["n"] == 4 and c["groups"]["PRUNED"]["n"] == 2 and not c["downsampled"]
    assert c["groups"]["PRUNED"]["x"] == [0.5, None, 0.5, 1.0, None]  # step × eval_every, None between trials
    small = collect.collect_curves(trials, max_curves=3)
    assert small["downsampled"] and small["n_drawn"] == 3 and small["n_total"] == 6
    drawn = small["groups"]["COMPLETE"]["y"]
    assert 80 in drawn, "the best trial is always drawn"


def test_pruning_savings_for_a_known_case(tmp_path):
    """4 complete × 4 epochs + pruned at epochs 1 and 2 = 19 of 6 × 4 = 24 epochs: 20.83% saved."""
    s = collect.collect_savings(trials_of(make_study(tmp_path)), max_epochs=4.0, eval_every=1.0)
    assert s["n_trials"] == 6 and s["n_pruned"] == 2
    assert s["epochs_trained"] == 19 and s["epochs_unpruned"] == 24
    assert s["percent_saved"] == pytest.approx(100 * 5 / 24)


def test_leaderboard_order_and_length(tmp_path):
    trials = trials_of(make_study(tmp_path))
    rows = collect.collect_leaderboard(trials, top=3)
    assert [r["val_top1"] for r in rows] == [80, 70, 60]
    assert [r["number"] for r in rows] == [3, 1, 2]
    assert rows[0]["val_top5"] == 95 and rows[0]["epochs"] == 4 and rows[0]["state"] == "COMPLETE"
    assert len(collect.collect_leaderboard(trials, top=10)) == 4


def test_parallel_slices_arch_and_importance(tmp_path):
    trials = trials_of(make_study(tmp_path))
    p = collect.collect_parallel(trials)
    names = [d["name"] for d in p["dims"]]
    assert names == ["arch", "lr", "batch_size", "aug_strength"] and len(p["value"]) == 4
    arch = next(d for d in p["dims"] if d["name"] == "arch")
    assert arch["labels"] == ["lenet", "resnet"] and set(arch["values"]) <= {0, 1}
    s = collect.collect_slices(trials, ["lr", "batch_size", "missing"])
    assert set(s) == {"lr", "batch_size"} and s["lr"]["log"] and len(s["lr"]["x"]) == 4
    a = collect.collect_arch(trials)
    assert sorted(v for vs in a.values() for v in vs) == [50, 60, 70, 80]
    imp = collect.collect_importance(trials)
    assert set(imp["importance"]) <= {"arch", "lr", "batch_size", "aug_strength"}


def test_header_counts_states_and_devices(tmp_path):
    study = make_study(tmp_path)
    h = collect.collect_header(trials_of(study), collect.study_info(study))
    assert h["states"]["COMPLETE"] == 4 and h["states"]["PRUNED"] == 2 and h["states"]["FAIL"] == 1
    assert h["devices"] == {"cpu": 7} and h["metric"] == "val_top1" and h["name"] == "demo"


# ---- layouts and the written file -------------------------------------------------------------------------


def test_write_report_is_self_contained_and_masks_passwords(tmp_path):
    study = make_study(tmp_path)
    out = report.write_report(study, tmp_path / "r" / "report.html", storage_url=SECRET_URL)
    text = out.read_text()
    assert "demo" in text and "val_top1" in text and "plotly" in text.lower()
    assert text.count("Plotly.newPlot") >= 5
    assert "hunter2pw" not in text, "the password in the spec and storage URL is masked"
    assert "alice:***@" in text


def test_write_report_on_an_empty_study(tmp_path):
    text = report.write_report(make_study(tmp_path, "empty"), tmp_path / "e.html").read_text()
    assert "no data" in text and "hunter2pw" not in text


def test_unknown_panel_kind_is_a_one_line_spec_error(tmp_path):
    (tmp_path / "bad.toml").write_text('[[panel]]\nkind = "history"\n\n[[panel]]\nkind = "pie"\n')
    with pytest.raises(SpecError) as e:
        report.load_layout("bad", dashboards_dir=tmp_path)
    msg = str(e.value)
    assert "'pie'" in msg and "panel 2" in msg and "\n" not in msg


def test_unknown_option_and_missing_layout_are_spec_errors(tmp_path):
    (tmp_path / "opt.toml").write_text('[[panel]]\nkind = "curves"\nmax_curvs = 3\n')
    with pytest.raises(SpecError, match="max_curvs"):
        report.load_layout("opt", dashboards_dir=tmp_path)
    with pytest.raises(SpecError, match="not found.*available: opt"):
        report.load_layout("nope", dashboards_dir=tmp_path)


def test_a_users_layout_in_the_working_dir_wins_over_the_built_in_one(tmp_path, monkeypatch):
    """Names are looked for in ./dashboards/ first, then among the layouts shipped in the package."""
    monkeypatch.chdir(tmp_path)
    assert [p["kind"] for p in report.load_layout("overview")][:2] == ["header", "leaderboard"]  # built-in
    (tmp_path / "dashboards").mkdir()
    (tmp_path / "dashboards" / "overview.toml").write_text('[[panel]]\nkind = "leaderboard"\ntop = 2\n')
    (tmp_path / "dashboards" / "mine.toml").write_text('[[panel]]\nkind = "history"\n')
    assert report.load_layout("overview") == [{"kind": "leaderboard", "top": 2}]
    assert report.load_layout("mine") == [{"kind": "history"}]
    with pytest.raises(SpecError, match=r"'nope' not found in dashboards/ or among the built-in layouts; "
                                        r"available: mine, overview$"):
        report.load_layout("nope")


def test_layout_options_are_applied(tmp_path):
    (tmp_path / "small.toml").write_text('[[panel]]\nkind = "leaderboard"\ntop = 2\n')
    panels = report.load_layout(str(tmp_path / "small.toml"))
    assert panels == [{"kind": "leaderboard", "top": 2}]
    text = report.write_report(make_study(tmp_path), tmp_path / "s.html", layout="small",
                               dashboards_dir=tmp_path).read_text()
    assert "Top 2 trials" in text
