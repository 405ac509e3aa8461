"""optuna-dashboard lists only artifacts that exist: a study run through the real CLI with ``--keep-best 1``,
served by the real `hpsearch dashboard`, every artifact its HTTP API lists downloads (issue 11)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import optuna
import pytest
from browser import running_dashboard
from conftest import run_cli
from optuna.trial import TrialState

from studies import study_text

pytestmark = pytest.mark.slow


def get(url: str) -> tuple[int, bytes]:
    """(HTTP status, body) of a GET; a 4xx/5xx answer is returned, not raised, so the test can name it."""
    try:
        with urllib.request.urlopen(url, timeout=30) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def test_every_listed_artifact_downloads_and_the_kept_checkpoint_is_listed(tmp_path):
    spec = tmp_path / "dash.toml"
    # 2 epochs: each trial writes 2 per-epoch checkpoints; 4 completed trials, of which retention keeps 1
    spec.write_text(study_text(name="dashart", n_trials=4, train={"max_epochs": 2}))
    db, art = f"sqlite:///{tmp_path / 'db.sqlite'}", tmp_path / "art"
    r = run_cli("run", str(spec), "--storage", db, "--artifacts", str(art), "--keep-best", "1", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    study = optuna.load_study(study_name="dashart", storage=db)
    complete = sorted(study.get_trials(states=(TrialState.COMPLETE,)), key=lambda t: t.value, reverse=True)
    assert len(complete) == 4, "every trial completed, so retention had some to remove"
    best = complete[0]

    with running_dashboard(db, art, tmp_path) as dash:
        sid = dash.study_id("dashart")
        status, body = get(f"{dash.base}/api/studies/{sid}?after=0")
        assert status == 200, body[:300]
        trials = json.loads(body)["trials"]
        assert len(trials) == 4
        listed = {t["number"]: t["artifacts"] for t in trials}
        for t in trials:
            for a in t["artifacts"]:
                status, content = get(f"{dash.base}/artifacts/{sid}/{t['trial_id']}/{a['artifact_id']}")
                assert status == 200, f"trial {t['number']} lists {a['filename']} ({a['artifact_id']}) " \
                                      f"but the dashboard answers {status}"
                assert content, f"trial {t['number']}'s {a['filename']} downloads empty"

    checkpoints = {n: [a for a in arts if a["filename"].endswith(".pt")] for n, arts in listed.items()}
    assert [a["artifact_id"] for a in checkpoints[best.number]] == [best.user_attrs["checkpoint"]], \
        "the best trial lists exactly the checkpoint retention kept"
    assert all(not checkpoints[t.number] for t in complete[1:]), "trials retention cleared list no checkpoint"
    # the inspection artifacts (confusion matrix, per-class accuracy, augmentation preview) stay listed
    for t in complete:
        assert set(t.user_attrs["artifacts"].values()) <= {a["artifact_id"] for a in listed[t.number]}
