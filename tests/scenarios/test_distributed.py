"""Many workers on one storage, killed workers, interrupted runs and checkpoint retention: real processes
against the real PostgreSQL, MariaDB and Redis services (see tests/services.py), SQLite and journal files."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from conftest import start_cli, wait_for
from optuna.trial import TrialState
from services import need_driver, service_url, unique

from hpsearch.storage.urls import open_storage
from studies import write_study

pytestmark = pytest.mark.slow


def spec_file(tmp_path: Path, name: str, n_trials: int, n_images: int = 400, epochs: int = 2,
              pruner: str = "none") -> Path:
    """Four classes of 28 px synthetic images, LeNet, one eval point per epoch."""
    return write_study(tmp_path / f"{name}.toml", name=name, n_trials=n_trials,
                       data={"num_classes": 4, "n_images": n_images},
                       train={"max_epochs": epochs, "eval_every": 1.0}, pruner={"name": pruner},
                       space={"lr": {"low": 1e-3, "high": 0.02, "log": True}, "batch_size": 64})


def hpsearch(*args: str, cwd: Path) -> subprocess.Popen:
    return start_cli(*args, cwd=cwd)


def finish(p: subprocess.Popen, timeout: float = 300) -> tuple[int, str]:
    out, _ = p.communicate(timeout=timeout)
    return p.returncode, out


def storage(url: str):
    return open_storage(url, heartbeat=None)


def check_study(url: str, name: str, n_trials: int, epochs: int = 2) -> list:
    study = optuna.load_study(study_name=name, storage=storage(url))
    trials = study.get_trials()
    retried = {n for t in trials for n in t.system_attrs.get("retry_history", [])}
    counted = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)
               or (t.state == TrialState.FAIL and t.number not in retried and not t.user_attrs.get("surplus"))]
    assert len(counted) == n_trials, [(t.number, t.state.name) for t in trials]
    assert len({t.number for t in trials}) == len(trials), "no duplicate trial numbers"
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    for t in trials:
        if t.state == TrialState.COMPLETE:
            assert sorted(t.intermediate_values) == list(range(1, epochs + 1)), (t.number, t.intermediate_values)
    return trials


def cleanup(url: str, name: str) -> None:
    with contextlib.suppress(Exception):
        optuna.delete_study(study_name=name, storage=storage(url))


@pytest.mark.parametrize("kind", ["postgresql", "mysql", "redis"])
def test_workers_share_a_study_on_a_server(kind, tmp_path):
    url = service_url(kind)
    name = unique(f"w-{kind}")
    try:
        p = hpsearch("run", str(spec_file(tmp_path, name, n_trials=8)), "--storage", url, "--workers",
                     "4" if kind == "postgresql" else "2", cwd=tmp_path)
        code, out = finish(p)
        assert code == 0, out
        check_study(url, name, 8)
    finally:
        cleanup(url, name)


@pytest.mark.parametrize("scheme", ["sqlite", "journal"])
def test_workers_share_a_study_in_a_file(scheme, tmp_path):
    url = f"sqlite:///{tmp_path / 'db.sqlite'}" if scheme == "sqlite" else f"journal:///{tmp_path / 'study.log'}"
    p = hpsearch("run", str(spec_file(tmp_path, "files", n_trials=6)), "--storage", url, "--workers", "3",
                 cwd=tmp_path)
    code, out = finish(p)
    assert code == 0, out
    check_study(url, "files", 6)


def test_killed_worker_trial_is_retried_and_resumes_from_its_checkpoint(tmp_path):
    url = service_url("postgresql")
    name = unique("kill")
    spec = spec_file(tmp_path, name, n_trials=5, n_images=2400, epochs=4)
    hb = ["--heartbeat-interval", "1", "--grace-period", "3", "--artifacts", str(tmp_path / "art")]
    try:
        # the first worker creates the study; the second joins it with no spec file
        a = hpsearch("run", str(spec), "--storage", url, *hb, cwd=tmp_path)
        wait_for(lambda: name in optuna.get_all_study_names(url), 60, "the study")
        b = hpsearch("worker", "--storage", url, "--study", name, *hb, cwd=tmp_path)

        def victim():
            for t in optuna.load_study(study_name=name, storage=url).get_trials(states=(TrialState.RUNNING,)):
                pid = int(t.user_attrs.get("worker", ":0").split(":")[1])
                if pid == b.pid and "checkpoint" in t.user_attrs and len(t.intermediate_values) >= 1:
                    return t
            return None

        killed = wait_for(victim, 180, "a checkpointed trial of worker b")
        os.kill(b.pid, signal.SIGKILL)
        b.wait()
        code, out = finish(a)
        assert code == 0, out
        trials = check_study(url, name, 5, epochs=4)
        by_number = {t.number: t for t in trials}
        assert by_number[killed.number].state == TrialState.FAIL
        retries = [t for t in trials if t.user_attrs.get("resumed_from_trial") == killed.number]
        assert len(retries) == 1, out
        r = retries[0]
        assert r.state == TrialState.COMPLETE
        assert r.user_attrs["resumed_at_epoch"] >= 1
        assert r.params == killed.params
        # the learning curve is continuous: the epochs before the checkpoint carry over, not retrained
        for step, value in killed.intermediate_values.items():
            if step <= r.user_attrs["resumed_at_epoch"]:
                assert r.intermediate_values[step] == value
        assert f"resuming trial {killed.number} at epoch" in out
    finally:
        cleanup(url, name)


def test_ctrl_c_checkpoints_and_the_rerun_resumes(tmp_path):
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    spec = spec_file(tmp_path, "intr", n_trials=3, n_images=3000, epochs=4)
    art = ["--artifacts", str(tmp_path / "art")]
    p = hpsearch("run", str(spec), "--storage", url, *art, cwd=tmp_path)

    def checkpointed():
        try:
            s = optuna.load_study(study_name="intr", storage=url)
        except KeyError:
            return None
        return [t for t in s.get_trials(states=(TrialState.RUNNING,)) if "checkpoint" in t.user_attrs]

    wait_for(checkpointed, 180, "a checkpointed running trial")
    p.send_signal(signal.SIGINT)
    code, out = finish(p)
    assert code == 130, out
    assert "checkpointed and re-queued" in out and "Traceback" not in out
    study = optuna.load_study(study_name="intr", storage=url)
    assert [t.state for t in study.trials].count(TrialState.WAITING) == 1

    code, out = finish(hpsearch("run", str(spec), "--storage", url, *art, cwd=tmp_path))
    assert code == 0, out
    trials = check_study(url, "intr", 3, epochs=4)
    resumed = [t for t in trials if "resumed_from_trial" in t.user_attrs]
    assert len(resumed) == 1 and resumed[0].user_attrs["resumed_at_epoch"] >= 1


def test_checkpoint_retention_keeps_only_the_best(tmp_path):
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    spec = spec_file(tmp_path, "keep", n_trials=6, pruner="median")
    art = tmp_path / "art"
    code, out = finish(hpsearch("run", str(spec), "--storage", url, "--artifacts", str(art), "--keep-best", "2",
                                cwd=tmp_path))
    assert code == 0, out
    study = optuna.load_study(study_name="keep", storage=url)
    complete = sorted(study.get_trials(states=(TrialState.COMPLETE,)), key=lambda t: t.value, reverse=True)
    kept = {t.user_attrs["checkpoint"] for t in complete[:2]}
    inspection = {i for t in study.trials for i in t.user_attrs.get("artifacts", {}).values()}
    on_disk = {f.name for f in art.rglob("*") if f.is_file()} - inspection  # checkpoints only
    assert on_disk == kept, (on_disk, kept)
    status = subprocess.run([sys.executable, "-m", "hpsearch.cli", "status", "--storage", url, "--artifacts",
                             str(art)], capture_output=True, text=True)
    assert "checkpoints use" in status.stdout


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_32_workers_lose_nothing(kind, tmp_path):
    url = f"sqlite:///{tmp_path / 'load.db'}" if kind == "sqlite" else service_url(kind)
    name = unique("load")
    n_workers, n_trials, n_reports = 32, 2, 20
    try:
        optuna.create_study(study_name=name, storage=storage(url))
        env = os.environ | {"PYTHONWARNINGS": "ignore"}
        procs = [subprocess.Popen([sys.executable, str(Path(__file__).with_name("load_worker.py")), url, name,
                                   str(n_trials), str(n_reports)], env=env, stderr=subprocess.PIPE, text=True)
                 for _ in range(n_workers)]
        errors = [(p.wait(timeout=600), p.stderr.read()) for p in procs]
        assert [e for e in errors if e[0] != 0] == [], "every worker exits cleanly"
        trials = optuna.load_study(study_name=name, storage=storage(url)).get_trials()
        assert len(trials) == n_workers * n_trials
        assert all(t.state == TrialState.COMPLETE for t in trials)
        lost = sum(n_reports - len(t.intermediate_values) for t in trials)
        assert lost == 0, f"{lost} intermediate values lost"
    finally:
        cleanup(url, name)


def test_postgres_restart_mid_study_loses_nothing(tmp_path):
    url = service_url("postgresql")
    versions = sorted(Path("/etc/postgresql").glob("*")) if Path("/etc/postgresql").is_dir() else []
    if not versions or os.geteuid() != 0:
        pytest.skip("needs root and a local PostgreSQL cluster to restart")
    name = unique("restart")
    spec = spec_file(tmp_path, name, n_trials=4, n_images=2400, epochs=4)
    try:
        p = hpsearch("run", str(spec), "--storage", url, "--workers", "2", "--artifacts", str(tmp_path / "art"),
                     cwd=tmp_path)

        def training():
            try:
                trials = optuna.load_study(study_name=name, storage=storage(url)).get_trials()
            except Exception:
                return False
            return any(t.intermediate_values for t in trials if t.state == TrialState.RUNNING)

        wait_for(training, 180, "a training trial")
        subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", versions[-1].name, "main", "restart"],
                       check=True, timeout=120)
        code, out = finish(p)
        assert code == 0, out
        check_study(url, name, 4, epochs=4)
        assert not any(t.state == TrialState.FAIL for t in optuna.load_study(
            study_name=name, storage=storage(url)).get_trials()), "no trial failed over the restart"
    finally:
        cleanup(url, name)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_grpc_proxy_serves_workers(tmp_path):
    need_driver("grpc")
    port = free_port()
    db = f"sqlite:///{tmp_path / 'behind-proxy.db'}"
    server = hpsearch("storage", "serve", "--storage", db, "--port", str(port), cwd=tmp_path)
    try:
        url = f"grpc://127.0.0.1:{port}"

        def up():
            try:
                open_storage(url, heartbeat=None)
                return True
            except Exception:
                return False

        wait_for(up, 60, "the gRPC proxy")
        code, out = finish(hpsearch("run", str(spec_file(tmp_path, "viagrpc", n_trials=4)), "--storage", url,
                                    "--workers", "2", cwd=tmp_path))
        assert code == 0, out
        check_study(db, "viagrpc", 4)  # the trials landed in the database behind the proxy
    finally:
        server.terminate()  # SIGTERM: SIGINT may be ignored when the tests run as a background job
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
