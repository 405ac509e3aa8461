"""What a user inspects: each completed trial's artifacts (checkpoint, confusion matrix, per-class accuracy,
augmentation preview) and note, downloadable through Optuna's artifact API and served by `hpsearch dashboard`."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import time
import urllib.request

import optuna
import pytest
from browser import free_port, running_dashboard
from optuna.artifacts import FileSystemArtifactStore, download_artifact
from optuna.trial import TrialState
from optuna_dashboard._note import get_note_from_system_attrs
from PIL import Image

from hpsearch.storage import optuna_internals as internals
from studies import write_study

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def finished_study(tmp_path_factory):
    """A small study run through the real CLI with an artifact store."""
    tmp = tmp_path_factory.mktemp("insp")
    spec = tmp / "s.toml"
    write_study(spec, name="insp", n_trials=4, data={"num_classes": 4, "n_images": 400},
                train={"max_epochs": 2, "eval_every": 1.0}, sampler={"name": "tpe"},
                space={"batch_size": None, "aug_strength": 0.6})
    db = f"sqlite:///{tmp / 'db.sqlite'}"
    r = subprocess.run([sys.executable, "-m", "hpsearch.cli", "run", str(spec), "--storage", db, "--artifacts",
                        str(tmp / "art"), "--keep-best", "4"], capture_output=True, text=True, cwd=tmp, timeout=600)
    assert r.returncode == 0, r.stderr
    return tmp, db


def test_completed_trials_carry_artifacts_and_a_note(finished_study, tmp_path):
    tmp, db = finished_study
    store = FileSystemArtifactStore(str(tmp / "art"))
    study = optuna.load_study(study_name="insp", storage=db)
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(complete) == 4
    for t in complete:
        ids = t.user_attrs["artifacts"]
        for name, artifact_id in ids.items():
            out = tmp_path / f"{t.number}-{name}"
            download_artifact(artifact_store=store, file_path=str(out), artifact_id=artifact_id)
            if name.endswith(".png"):
                with Image.open(out) as img:
                    assert img.size[0] > 50 and img.size[1] > 20, name
            else:
                per_class = json.loads(out.read_text())["classes"]
                assert len(per_class) == 4 and sum(c["images"] for c in per_class) == 67, "the validation images"
        ckpt = tmp_path / f"{t.number}.pt"
        download_artifact(artifact_store=store, file_path=str(ckpt), artifact_id=t.user_attrs["checkpoint"])
        assert ckpt.stat().st_size > 1000
        note = get_note_from_system_attrs(internals.study_storage(study).get_study_system_attrs(internals.study_id(study)),
                                         internals.trial_id(t))["body"]
        assert "val Top-1" in note and "lenet" in note, "the markdown note is stored"


def test_dashboard_serves_the_study_and_its_artifacts(finished_study):
    tmp, db = finished_study
    with running_dashboard(db, tmp / "art", tmp) as dash:
        assert [s["study_name"] for s in dash.studies] == ["insp"]
        study = optuna.load_study(study_name="insp", storage=db)
        t = study.get_trials(states=(TrialState.COMPLETE,))[0]
        png = urllib.request.urlopen(f"{dash.base}/artifacts/{dash.study_id('insp')}/{t._trial_id}/"
                                     f"{t.user_attrs['artifacts']['confusion_matrix.png']}", timeout=5).read()
        assert Image.open(io.BytesIO(png)).format == "PNG"
    assert "127.0.0.1" in dash.stderr()


def test_dashboard_warns_on_all_interfaces(finished_study, tmp_path):
    tmp, db = finished_study
    log = tmp_path / "stderr.txt"
    with open(log, "w") as err:
        p = subprocess.Popen([sys.executable, "-m", "hpsearch.cli", "dashboard", "--storage", db, "--host",
                              "0.0.0.0", "--port", str(free_port())], cwd=tmp, stderr=err, text=True)
        try:
            for _ in range(150):
                if "on http://" in log.read_text():
                    break
                time.sleep(0.2)
        finally:
            p.terminate()
            p.wait(timeout=30)
    assert "warning: the dashboard listens on all interfaces (0.0.0.0)" in log.read_text()


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
@pytest.mark.parametrize("kind", ["postgresql", "mysql", "journal", "redis"])
def test_dashboard_serves_a_study_from_every_storage(kind, tmp_path):
    """`hpsearch dashboard` on each storage hpsearch supports lists the study and serves its trials."""
    from services import service_url, unique

    from hpsearch.storage.urls import open_storage

    url = f"journal:///{tmp_path / 'study.log'}" if kind == "journal" else service_url(kind)
    name = unique("dash")
    study = optuna.create_study(study_name=name, storage=open_storage(url, heartbeat=None), direction="maximize")
    study.set_metric_names(["val_top1"])
    try:
        for v in (50.0, 75.0):
            study.add_trial(optuna.trial.create_trial(value=v, params={"lr": 0.01},
                                                      distributions={"lr": optuna.distributions.FloatDistribution(
                                                          1e-3, 0.1, log=True)},
                                                      intermediate_values={1: v / 2, 2: v}))
        with running_dashboard(url, None, tmp_path) as dash:
            sid = dash.study_id(name)
            detail = json.load(urllib.request.urlopen(f"{dash.base}/api/studies/{sid}", timeout=30))
        assert [t["values"] for t in detail["trials"]] == [[50.0], [75.0]]
        assert detail["best_trials"][0]["values"] == [75.0]
    finally:
        optuna.delete_study(study_name=name, storage=open_storage(url, heartbeat=None))
