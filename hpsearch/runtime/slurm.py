"""``hpsearch slurm``: a study's workers as one SLURM job array, and where a trial runs.

:func:`launch_slurm` creates the study (or checks that it exists) before any task starts, since array tasks
that start together would race to create it, then writes an sbatch script whose every array task runs
``hpsearch worker`` on it, and with ``submit`` hands it to ``sbatch``. The script holds no password: the
storage URL goes into a file beside it with mode 0600, read at run time into ``$HPSEARCH_STORAGE`` (jobs run
as the submitting user, who can read it). The worker is ``exec``'d, so it *is* the batch shell: every SIGTERM
SLURM sends — the warning before the time limit (``--signal=B:TERM@…``), ``scancel --batch``, a requeue, a
pre-emption — reaches it exactly once, and it checkpoints and re-queues its trial (a second SIGTERM would
abort it at once, which is why the worker is not run under ``srun`` or behind a forwarding trap).
``--requeue`` lets SLURM start a pre-empted task again. A killed task's trial is resumed by the heartbeat
retry in another worker.

:func:`record_placement` stores on each trial the host and, under SLURM, the job and array task it runs in,
which ``hpsearch status`` shows for running trials.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from hpsearch.errors import HpsearchError, SpecError, first_line
from hpsearch.storage.urls import mask_secrets, mask_url

SIGNAL_LEAD_S = 120  # SIGTERM this long before the time limit (SLURM may send it up to 60 s earlier still)
_PARTITION = re.compile(r"[A-Za-z0-9_.,-]+\Z")
_TIME = re.compile(r"(?:(\d+)-)?(\d+(?::\d+){0,2})\Z")
TIME_FORMS = "HH:MM:SS, MM, MM:SS, D-HH, D-HH:MM or D-HH:MM:SS"


def time_limit_seconds(text: str) -> int:
    """SLURM's ``--time`` forms → seconds: ``MM``, ``MM:SS``, ``HH:MM:SS``, ``D-HH``, ``D-HH:MM``,
    ``D-HH:MM:SS``; SpecError (exit 2) for anything else or a zero limit."""
    m = _TIME.match(text)
    if m:
        parts = [int(p) for p in m[2].split(":")]
        if m[1] is None:  # no days: MM, MM:SS or HH:MM:SS
            h, mi, s = {1: (0, parts[0], 0), 2: (0, *parts), 3: tuple(parts)}[len(parts)]
        else:  # D-HH, D-HH:MM or D-HH:MM:SS
            h, mi, s = (*parts, 0, 0)[:3]
        seconds = ((int(m[1] or 0) * 24 + h) * 60 + mi) * 60 + s
        if all(v < 60 for v in parts[1:]) and seconds > 0:  # the fields after the first are minutes, seconds
            return seconds
    raise SpecError(f"--time is {text!r}, but must be a positive SLURM time limit: {TIME_FORMS}")


@dataclass(frozen=True)
class SlurmJob:
    """What the sbatch script asks SLURM for: ``array`` tasks (one worker each), per task ``gpus`` GPUs and
    ``cpus`` CPUs, a time limit, a partition, and extra ``#SBATCH`` lines copied verbatim."""

    array: int
    gpus: int | None = None  # --gpus-per-task
    cpus: int | None = None  # --cpus-per-task; the worker's torch threads too ($HPSEARCH_THREADS)
    time: str | None = None  # --time, in any SLURM form
    partition: str | None = None
    extra: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.array < 1:
            raise SpecError(f"--array is {self.array}, but must be ≥ 1")
        if self.time is not None:
            time_limit_seconds(self.time)
        if self.partition is not None and not _PARTITION.match(self.partition):
            raise SpecError(f"--partition is {self.partition!r}, but must be partition names (letters, digits, "
                            "_ . -; comma-separated)")
        for line in self.extra:
            if not line.startswith("#SBATCH ") or "\n" in line or "\r" in line:
                raise SpecError(f"--extra is {line!r}, but must be one '#SBATCH ...' line, such as "
                                "'#SBATCH --qos=high'")

    @property
    def signal_lead_s(self) -> int:
        """Seconds before the limit for the SIGTERM: at most half a short limit."""
        if self.time is None:
            return SIGNAL_LEAD_S
        return max(1, min(SIGNAL_LEAD_S, time_limit_seconds(self.time) // 2))


def sbatch_script(study_name: str, job: SlurmJob, worker_args: list[str], storage_file: Path, log_dir: Path,
                  workdir: Path, masked_url: str, python: str = sys.executable) -> str:
    """The sbatch script's text: every array task runs ``hpsearch worker --study NAME WORKER_ARGS``."""
    directives = [f"--job-name=hpsearch-{study_name}", f"--array=0-{job.array - 1}", "--ntasks=1"]
    directives += [f"--cpus-per-task={job.cpus}"] * (job.cpus is not None)
    directives += [f"--gpus-per-task={job.gpus}"] * bool(job.gpus)
    directives += [f"--time={job.time}"] * (job.time is not None)
    directives += [f"--partition={job.partition}"] * (job.partition is not None)
    directives += [f"--output={log_dir / f'{study_name}-%A_%a.out'}", "--open-mode=append",
                   f"--chdir={workdir}", "--requeue", f"--signal=B:TERM@{job.signal_lead_s}"]
    # `#SBATCH` lines end at the first command; comments may come between them
    lines = ["#!/bin/bash",
             f"# hpsearch workers for study {study_name}, written by `hpsearch slurm`: each array task runs one",
             f"# `hpsearch worker`. Storage: {masked_url}; the URL is read at run time from",
             f"# {storage_file} (mode 0600), so that this script holds no password.",
             "# SIGTERM comes before the time limit (--signal); --requeue restarts pre-empted and requeued tasks.",
             *(f"#SBATCH {shlex.quote(d)}" for d in directives), *job.extra, "",
             "set -euo pipefail",
             f"HPSEARCH_STORAGE=\"$(cat {shlex.quote(str(storage_file))})\"",
             "export HPSEARCH_STORAGE HPSEARCH_NO_LIVE=1 PYTHONUNBUFFERED=1"]
    if job.cpus is not None:
        lines.append("export HPSEARCH_THREADS=\"${SLURM_CPUS_PER_TASK:-1}\"")
    lines += ["echo \"hpsearch worker on $(hostname): job ${SLURM_JOB_ID:-?}, array task "
              "${SLURM_ARRAY_JOB_ID:-?}_${SLURM_ARRAY_TASK_ID:-?}, restart ${SLURM_RESTART_COUNT:-0}\" >&2",
              "# exec: the worker is the batch shell, so each SIGTERM from SLURM reaches it once (checkpoint, re-queue)",
              "exec " + shlex.join([python, "-m", "hpsearch.cli", "worker", "--study", study_name, *worker_args])]
    return "\n".join(lines) + "\n"


def write_private(path: Path, text: str) -> None:
    """Writes ``text`` to ``path`` readable by its owner only (mode 0600, also when the file existed)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def prepare_study(target: str, storage_url: str, study_name: str | None, opts: Any) -> tuple[str, int, int]:
    """``target`` is a study file (the study is created, or continued when it exists with the same spec) or the
    name of an existing study; returns (name, finished trials, n_trials)."""
    from hpsearch.search.scheduler import finished_count
    from hpsearch.search.study import load_study, open_study, stored_spec
    from hpsearch.storage.urls import open_storage

    if Path(target).is_file() or target.endswith(".toml"):
        from hpsearch.spec import load_spec

        spec = opts.apply(load_spec(target))
        name = study_name or spec.study.name
        study = open_study(spec, open_storage(storage_url, opts.heartbeat), name)
    else:
        if study_name not in (None, target):
            raise SpecError(f"--study is {study_name!r}, but {target!r} is a study name already; pass one of them")
        study = load_study(open_storage(storage_url, opts.heartbeat), target)
        spec, name = opts.apply(stored_spec(study)), target
    return name, finished_count(study.get_trials(deepcopy=False)), spec.study.n_trials


def launch_slurm(target: str, storage_url: str, study_name: str | None, job: SlurmJob, opts: Any,
                 script: str | None = None, submit: bool = False, stream: TextIO = sys.stdout) -> Path:
    """``hpsearch slurm``: the study first, then the script (default ``slurm/STUDY.sbatch``) and the storage
    file beside it (``.storage``, mode 0600); with ``submit``, ``sbatch`` (HpsearchError, exit 1, when it is
    missing or refuses). Returns the script's path."""
    masked = mask_url(storage_url)
    name, done, n_trials = prepare_study(target, storage_url, study_name, opts)
    print(f"study {name} in {masked}: {done} of {n_trials} trials finished", file=stream, flush=True)
    path = Path(script or Path("slurm") / f"{name}.sbatch").absolute()
    path.parent.mkdir(parents=True, exist_ok=True)
    storage_file = path.with_suffix(".storage") if path.suffix != ".storage" else path.with_suffix(".url")
    write_private(storage_file, storage_url + "\n")
    path.write_text(sbatch_script(name, job, opts.worker_args(), storage_file, path.parent, Path.cwd(), masked))
    print(f"wrote {path} ({job.array} array tasks, one `hpsearch worker` each; logs {path.parent}/{name}-%A_%a.out)\n"
          f"wrote {storage_file} (the storage URL, mode 0600; the script reads it at run time)", file=stream, flush=True)
    if not submit:
        print(f"submit it with: sbatch {shlex.quote(str(path))}", file=stream, flush=True)
        return path
    job_id = submit_script(path, storage_url)
    print(f"submitted batch job {job_id} (tasks {job_id}_0 to {job_id}_{job.array - 1}); watch it with "
          f"`squeue -j {job_id}` and `hpsearch status --study {name}`", file=stream, flush=True)
    return path


def submit_script(path: Path, storage_url: str | None = None) -> str:
    """``sbatch --parsable PATH`` → the job id; HpsearchError (exit 1) when sbatch is missing or refuses."""
    sbatch = shutil.which("sbatch")
    if sbatch is None:
        raise HpsearchError(f"sbatch is not on PATH (is this a SLURM login node?); the script is written: submit it "
                            f"there with `sbatch {path}`")
    p = subprocess.run([sbatch, "--parsable", str(path)], capture_output=True, text=True, timeout=120)
    if p.returncode != 0:
        detail = mask_secrets(first_line(Exception(p.stderr or p.stdout), "no message"), storage_url)
        raise HpsearchError(f"sbatch refused {path} (exit {p.returncode}): {detail}")
    return p.stdout.strip().split(";")[0]
