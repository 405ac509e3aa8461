"""Security: planted pickles never run, storage passwords never show, names and artifact ids stay inside their
folders, and the spec is data. Real files, a real SQLite/PostgreSQL study and the real CLI."""

from __future__ import annotations

import ast
import io
import json
import os
import pickle
import subprocess
import sys
import uuid
from pathlib import Path

import optuna
import pytest
import torch
from conftest import ROOT
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.trial import TrialState
from services import service_url, unique

from hpsearch.errors import HpsearchError
from hpsearch.search.space import suggest
from hpsearch.search.study import open_study
from hpsearch.spec import load_spec
from hpsearch.storage import optuna_internals as internals
from hpsearch.storage.artifacts import open_artifact_store
from hpsearch.storage.checkpoints import Checkpoints
from hpsearch.storage.urls import open_storage
from studies import write_study

pytestmark = pytest.mark.slow


def spec_file(tmp_path: Path, name: str, n_trials: int = 2) -> Path:
    return write_study(tmp_path / f"{name}.toml", name=name, n_trials=n_trials)


def hpsearch(*args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    full = os.environ | {"PYTHONWARNINGS": "ignore", "HPSEARCH_NO_LIVE": "1"} | (env or {})
    full.pop("HPSEARCH_STORAGE", None)
    return subprocess.run([sys.executable, "-m", "hpsearch.cli", *args], cwd=cwd, env=full, text=True,
                          capture_output=True, timeout=300)


class Evil:
    """Unpickling this runs ``touch MARKER``."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


# ---- pickles ---------------------------------------------------------------------------------------------


def test_planted_checkpoints_are_refused_on_resume_and_run_nothing(tmp_path):
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    marker = tmp_path / "pwned-by-checkpoint"
    spec = spec_file(tmp_path, "plant", n_trials=2)
    study = open_study(load_spec(spec), open_storage(url, heartbeat=None), "plant")
    art = tmp_path / "art"
    open_artifact_store(str(art))  # creates the folder
    torch_format = io.BytesIO()
    torch.save({"model": Evil(marker), "optimizer": {}, "epoch": 1}, torch_format)
    for payload in (pickle.dumps(Evil(marker)), torch_format.getvalue()):  # a raw pickle and torch.save's zip
        artifact_id = str(uuid.uuid4())
        (art / artifact_id).write_bytes(payload)
        t = study.ask()
        suggest(t, load_spec(spec).space)
        t.set_user_attr("checkpoint", artifact_id)  # as a killed worker's trial would carry it
        study.tell(t, state=TrialState.FAIL)
    for t in study.get_trials():
        RetryHeartbeatStaleTrialCallback(max_retry=None)(study, t)  # re-queued to resume from the checkpoint

    r = hpsearch("run", str(spec), "--storage", url, "--artifacts", str(art), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert not marker.exists(), "no planted code ran"
    refused = [ln for ln in r.stderr.splitlines() if "cannot be loaded safely" in ln]
    assert len(refused) == 2 and all("training from scratch" in ln for ln in refused), r.stderr
    assert "Traceback" not in r.stderr
    retries = [t for t in optuna.load_study(study_name="plant", storage=url).trials if t.number >= 2]
    assert [t.state for t in retries] == [TrialState.COMPLETE] * 2, "the retried trials trained from scratch"


def test_planted_model_file_in_torch_format_is_refused_by_predict(tmp_path):
    marker = tmp_path / "pwned-by-model"
    evil = tmp_path / "model.pt"
    torch.save({"format": "hpsearch-model", "version": 1, "meta": "{}", "state_dict": Evil(marker)}, evil)
    (tmp_path / "img.png").write_bytes(b"")
    r = hpsearch("predict", "--model", str(evil), str(tmp_path / "img.png"), cwd=tmp_path)
    assert r.returncode == 1
    assert len(r.stderr.strip().splitlines()) == 1 and "not an hpsearch model file" in r.stderr
    assert not marker.exists()


# ---- passwords -------------------------------------------------------------------------------------------


def test_storage_password_appears_nowhere(tmp_path):
    password = "S3cretPW"
    url = service_url("postgresql").replace("postgres@", f"postgres:{password}@")  # trust auth accepts any
    name = unique("pw")
    log = tmp_path / "hpsearch.log"
    st = ["--storage", url]
    outputs = []
    try:
        # a failing trial too (an injected exception): its reason and traceback are written as well
        run = hpsearch("-v", "--log-file", str(log), "run", str(spec_file(tmp_path, name, n_trials=3)), *st,
                       "--artifacts", str(tmp_path / "art"), cwd=tmp_path,
                       env={"HPSEARCH_FAULTS": "error=0.5,seed=3"})
        assert run.returncode == 0, run.stderr
        for args in (["status"], ["status", "--json"], ["best", "--study", name], ["best", "--study", name, "--json"],
                     ["export", "--study", name, "-o", str(tmp_path / "t.csv")],
                     ["export", "--study", name, "-o", str(tmp_path / "t.json")],
                     ["report", "--study", name, "-o", str(tmp_path / "r.html")],
                     ["-v", "--log-file", str(log), "worker", "--study", name, "--artifacts", str(tmp_path / "art")]):
            outputs.append(subprocess.Popen([sys.executable, "-m", "hpsearch.cli", *args, *st], cwd=tmp_path,
                                            env=os.environ | {"PYTHONWARNINGS": "ignore"}, text=True,
                                            stdout=subprocess.PIPE, stderr=subprocess.PIPE))  # all at once
        texts = {"run": run.stdout + run.stderr}
        for p in outputs:
            out, err = p.communicate(timeout=300)
            assert p.returncode == 0, (p.args, err)
            texts[" ".join(p.args[3:7])] = out + err
        study = optuna.load_study(study_name=name, storage=open_storage(url, heartbeat=None))
        trials = study.get_trials()
        assert {t.state for t in trials} >= {TrialState.COMPLETE, TrialState.FAIL}, "both kinds were written"

        files = [tmp_path / n for n in ("t.csv", "t.json", "r.html", "hpsearch.log")]
        files += [f for f in (tmp_path / "art").rglob("*") if f.is_file()]
        assert log.read_text().count("Traceback") >= 1, "the log file holds the failed trial's traceback"
        for f in files:
            texts[str(f)] = f.read_bytes().decode("latin-1")
        texts["study attrs"] = json.dumps([study.user_attrs, internals.study_storage(study).get_study_system_attrs(internals.study_id(study))],
                                          default=str)
        for t in trials:
            texts[f"trial {t.number} attrs"] = json.dumps([t.user_attrs, t.system_attrs], default=str)
        leaks = [where for where, text in texts.items() if password in text]
        assert leaks == [], f"the password shows in {leaks}"
        assert any("postgres:***@" in text for text in texts.values()), "the URL is shown, masked"
    finally:
        optuna.delete_study(study_name=name, storage=open_storage(url, heartbeat=None))


# ---- paths -----------------------------------------------------------------------------------------------


def test_artifact_ids_cannot_reach_outside_the_artifact_folder(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    art = tmp_path / "art"
    checkpoints = Checkpoints(open_artifact_store(str(art)), keep_best=0)
    for bad in ("../victim.txt", str(victim), "x/../../victim.txt", "..", "", ".hidden"):
        with pytest.raises(HpsearchError, match="is not valid"):
            checkpoints.load(bad)
        checkpoints.remove(bad)
    # the same through retention, from a study whose trial attributes someone else wrote
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'db.sqlite'}")
    for bad in ("../victim.txt", str(victim)):
        t = study.ask()
        t.set_user_attr("checkpoint", bad)
        study.tell(t, 1.0)
    Checkpoints(open_artifact_store(str(art)), keep_best=0).apply_retention(study)
    assert victim.read_text() == "keep me"


def test_study_names_cannot_escape_their_folder(tmp_path):
    spec = spec_file(tmp_path, "ok")
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    procs = [subprocess.Popen([sys.executable, "-m", "hpsearch.cli", "run", str(spec), "--storage", url, "--study",
                               name], cwd=tmp_path, text=True, stderr=subprocess.PIPE, stdout=subprocess.PIPE)
             for name in ("../evil", "/tmp/evil", "..")]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 2 and len(err.strip().splitlines()) == 1, err
        assert "is not a study name" in err
    assert not (tmp_path / "db.sqlite").exists() or optuna.get_all_study_names(url) == []
    # a study with such a name written into a shared storage by other means: its report needs an explicit -o
    optuna.create_study(study_name="../evil", storage=url)
    (tmp_path / "work").mkdir()
    r = hpsearch("report", "--storage", url, "--study", "../evil", cwd=tmp_path / "work")
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip() == "hpsearch: error: study name '../evil' cannot name a file in dashboards/; pass -o " \
                               "FILE.html"
    assert not (tmp_path / "evil.html").exists() and not (tmp_path / "work" / "dashboards").exists()


# ---- the spec is data ------------------------------------------------------------------------------------

CODE = "__import__('os').system('touch {marker}')"


@pytest.mark.parametrize("key", ["study.name", "space.optimizer", "space.lr", "train.max_epochs"])
def test_code_in_a_spec_field_is_an_invalid_value(tmp_path, key):
    marker = tmp_path / "pwned-by-spec"
    section, field = key.split(".")
    spec = write_study(tmp_path / "code.toml", n_trials=1, **{section: {field: CODE.format(marker=marker)}})
    r = hpsearch("validate", str(spec), cwd=tmp_path)
    assert r.returncode == 2, r.stdout + r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and f"`{key}`" in r.stderr
    assert not marker.exists()


def test_a_free_text_field_holding_code_stays_text(tmp_path):
    marker = tmp_path / "pwned-by-root"
    spec = write_study(tmp_path / "root.toml", name="rootcode", n_trials=1,
                       data={"root": f"$(touch {marker})"})
    r = hpsearch("validate", str(spec), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert not marker.exists()


def test_the_package_never_evaluates_code():
    """No eval/exec/compile/__import__ call anywhere in hpsearch/: no spec or stored value can become code."""
    calls = []
    for path in (ROOT / "hpsearch").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in (
                    "eval", "exec", "compile", "__import__"):
                calls.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.func.id}")
    assert calls == []
