"""`hpsearch slurm` without a cluster: the sbatch script it writes, the storage file beside it, the study it
creates first, its one-line errors, and where a trial runs as `hpsearch status` shows it. (The scripts run on a
real SLURM cluster in tests/scenarios/test_slurm.py.)"""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import sys

import optuna
import pytest
from conftest import run_cli
from services import service_url, unique

from hpsearch.errors import SpecError
from hpsearch.inspect.status import format_status, study_status
from hpsearch.runtime.placement import placement
from hpsearch.runtime.slurm import time_limit_seconds
from hpsearch.search.objective import record_placement
from hpsearch.storage.urls import open_storage
from studies import write_study


@pytest.mark.parametrize(("text", "seconds"), [("90", 5400), ("30:15", 1815), ("02:00:00", 7200),
                                               ("1-0", 86400), ("1-12:30", 131400), ("2-00:00:05", 172805)])
def test_time_limits_in_every_slurm_form(text, seconds):
    assert time_limit_seconds(text) == seconds


@pytest.mark.parametrize("text", ["", "abc", "0", "00:00:00", "1:61:00", "10:75", "1-2:3:4:5", " 10", "1h"])
def test_bad_time_limits_are_refused(text):
    with pytest.raises(SpecError, match=r"^--time is .*, but must be a positive SLURM time limit: HH:MM:SS"):
        time_limit_seconds(text)


def directives(script: str) -> list[str]:
    return [ln.removeprefix("#SBATCH ") for ln in script.splitlines() if ln.startswith("#SBATCH ")]


@pytest.mark.slow
def test_the_script_runs_one_worker_per_array_task_and_the_study_exists_before_it(tmp_path):
    spec = write_study(tmp_path / "s.toml", name="arr", n_trials=5)
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    r = run_cli("slurm", str(spec), "--storage", url, "--array", "3", "--gpus-per-task", "1", "--cpus-per-task", "4",
                "--time", "02:00:00", "--partition", "gpu", "--extra", "#SBATCH --qos=high", "--artifacts",
                "s3://bucket/hp", "--heartbeat-interval", "30", "--grace-period", "90", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    script_path, storage_file = tmp_path / "slurm" / "arr.sbatch", tmp_path / "slurm" / "arr.storage"
    assert r.stdout.splitlines() == [
        f"study arr in {url}: 0 of 5 trials finished",
        f"wrote {script_path} (3 array tasks, one `hpsearch worker` each; logs {tmp_path}/slurm/arr-%A_%a.out)",
        f"wrote {storage_file} (the storage URL, mode 0600; the script reads it at run time)",
        f"submit it with: sbatch {script_path}"]
    script = script_path.read_text()
    assert directives(script) == [
        "--job-name=hpsearch-arr", "--array=0-2", "--ntasks=1", "--cpus-per-task=4", "--gpus-per-task=1",
        "--time=02:00:00", "--partition=gpu", f"--output={tmp_path}/slurm/arr-%A_%a.out", "--open-mode=append",
        f"--chdir={tmp_path}", "--requeue", "--signal=B:TERM@120", "--qos=high"]
    body = [ln for ln in script.splitlines() if ln and not ln.startswith("#")]
    assert body[-1] == (f"exec {sys.executable} -m hpsearch.cli worker --study arr --artifacts s3://bucket/hp "
                        "--heartbeat-interval 30 --grace-period 90 --max-retry 1 --keep-best 3"), \
        "the worker is the batch shell (exec), so SLURM's SIGTERM reaches it once"
    assert f'HPSEARCH_STORAGE="$(cat {storage_file})"' in body
    assert 'export HPSEARCH_THREADS="${SLURM_CPUS_PER_TASK:-1}"' in body
    assert subprocess.run(["bash", "-n", str(script_path)]).returncode == 0, "the script is valid bash"
    assert storage_file.read_text() == url + "\n" and stat.S_IMODE(storage_file.stat().st_mode) == 0o600
    study = optuna.load_study(study_name="arr", storage=url)
    assert "hpsearch.spec" in study.user_attrs, "the study was created (with its spec) before any task starts"


@pytest.mark.slow
def test_the_password_is_only_in_the_0600_file(tmp_path):
    base = service_url("postgresql")  # trust auth: any password is accepted
    url = base.replace("postgres@", "postgres:S3cretPW@")
    name = unique("slurmpw")
    spec = write_study(tmp_path / "s.toml", name=name)
    try:
        r = run_cli("slurm", str(spec), "--storage", url, "--array", "2", "--time", "3", cwd=tmp_path)
        assert r.returncode == 0, r.stderr
        assert "S3cretPW" not in r.stdout + r.stderr and "postgres:***@127.0.0.1" in r.stdout
        script = (tmp_path / "slurm" / f"{name}.sbatch").read_text()
        assert "S3cretPW" not in script and "postgres:***@127.0.0.1" in script
        assert "--signal=B:TERM@90" in directives(script), "a short limit: the warning comes at half of it"
        storage_file = tmp_path / "slurm" / f"{name}.storage"
        assert storage_file.read_text() == url + "\n" and stat.S_IMODE(storage_file.stat().st_mode) == 0o600
        storage_file.chmod(0o644)  # written again (an existing study, by name): private again
        r = run_cli("slurm", name, "--storage", url, "--array", "1", cwd=tmp_path)
        assert r.returncode == 0, r.stderr
        assert stat.S_IMODE(storage_file.stat().st_mode) == 0o600
    finally:
        optuna.delete_study(study_name=name, storage=open_storage(base, heartbeat=None))


SPEC = "s.toml"  # the study file every case gets; "ghost" names a study its storage lacks (it holds "alpha")
BAD = {
    "array 0": ([SPEC, "--array", "0"], 2,
                "hpsearch slurm: error: Invalid value for '--array': 0 is not in the range x>=1."),
    "bad time": ([SPEC, "--array", "2", "--time", "1:61:00"], 2,
                 "hpsearch: error: --time is '1:61:00', but must be a positive SLURM time limit: HH:MM:SS, MM, "
                 "MM:SS, D-HH, D-HH:MM or D-HH:MM:SS"),
    "bad partition": ([SPEC, "--array", "2", "--partition", "gpu; rm -rf ~"], 2,
                      "hpsearch: error: --partition is 'gpu; rm -rf ~', but must be partition names (letters, "
                      "digits, _ . -; comma-separated)"),
    "bad extra": ([SPEC, "--array", "2", "--extra", "--qos=high"], 2,
                  "hpsearch: error: --extra is '--qos=high', but must be one '#SBATCH ...' line, such as "
                  "'#SBATCH --qos=high'"),
    "unknown study": (["ghost", "--array", "2"], 1, "hpsearch: error: no study named 'ghost'; the storage holds: alpha"),
    "no sbatch": ([SPEC, "--array", "2", "--submit"], 1,
                  "hpsearch: error: sbatch is not on PATH (is this a SLURM login node?); the script is written: "
                  "submit it there with `sbatch {cwd}/slurm/bad.sbatch`"),
}


@pytest.mark.slow
def test_bad_options_are_one_line_each_and_sbatch_missing_is_a_runtime_error(tmp_path):
    env = os.environ | {"PYTHONWARNINGS": "ignore", "PATH": str(tmp_path / "empty")}  # no sbatch there
    env.pop("HPSEARCH_STORAGE", None)
    procs = {}
    for case, (args, _, _) in BAD.items():  # at once: six interpreter starts cost about two
        cwd = tmp_path / case.replace(" ", "_")
        cwd.mkdir()
        write_study(cwd / SPEC, name="bad")
        optuna.create_study(study_name="alpha", storage=f"sqlite:///{cwd / 'db.sqlite'}")
        procs[case] = subprocess.Popen([sys.executable, "-m", "hpsearch.cli", "slurm", *args, "--storage",
                                        f"sqlite:///{cwd / 'db.sqlite'}"], cwd=cwd, env=env, text=True,
                                       stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    for case, p in procs.items():
        out, err = p.communicate(timeout=300)
        _, code, message = BAD[case]
        cwd = tmp_path / case.replace(" ", "_")
        assert p.returncode == code, (case, err)
        assert [ln for ln in err.splitlines() if ln.strip()] == [message.format(cwd=cwd)], case
        if case == "no sbatch":
            assert (cwd / "slurm" / "bad.sbatch").is_file(), "the script is written before sbatch is looked for"
        else:
            assert not (cwd / "slurm").exists(), case
            assert optuna.get_all_study_names(f"sqlite:///{cwd / 'db.sqlite'}") == ["alpha"], "nothing created"


# ---- where a trial runs ----------------------------------------------------------------------------------


def test_placement_is_the_host_and_the_slurm_ids_that_are_set():
    env = {"SLURM_JOB_ID": "1235", "SLURM_ARRAY_JOB_ID": "1234", "SLURM_ARRAY_TASK_ID": "1", "SLURM_NTASKS": "1"}
    assert placement(env) == {"host": socket.gethostname(), "slurm_job_id": "1235", "slurm_array_job_id": "1234",
                              "slurm_array_task_id": "1"}
    assert placement({"SLURM_JOB_ID": "77"}) == {"host": socket.gethostname(), "slurm_job_id": "77"}
    assert placement({}) == {"host": socket.gethostname()}


def test_status_shows_each_running_trial_s_host_and_slurm_task(tmp_path, monkeypatch):
    study = optuna.create_study(study_name="where", storage=f"sqlite:///{tmp_path / 'db.sqlite'}")
    for var, value in {"SLURM_JOB_ID": "1235", "SLURM_ARRAY_JOB_ID": "1234", "SLURM_ARRAY_TASK_ID": "1"}.items():
        monkeypatch.setenv(var, value)
    record_placement(study.ask(), placement())
    monkeypatch.setenv("SLURM_JOB_ID", "1300")
    monkeypatch.delenv("SLURM_ARRAY_JOB_ID")
    monkeypatch.delenv("SLURM_ARRAY_TASK_ID")
    record_placement(study.ask(), placement())
    # a retry inherits its predecessor's attributes (Optuna copies them): ids this process lacks are cleared
    monkeypatch.delenv("SLURM_JOB_ID")
    inherited = study.ask()
    inherited.set_user_attr("slurm_job_id", "999")
    record_placement(inherited, placement())
    finished = study.ask()
    record_placement(finished, placement())
    study.tell(finished, 50.0)
    host = socket.gethostname()
    text = format_status({"storage": "sqlite:///db.sqlite", "artifact_bytes": 0, "studies": [study_status(study)]})
    assert text.splitlines()[2:] == [f"  trial 0 running on {host} (slurm job 1235 = array task 1234_1)",
                                     f"  trial 1 running on {host} (slurm job 1300)",
                                     f"  trial 2 running on {host}"]
    assert study.trials[2].user_attrs["slurm_job_id"] is None
