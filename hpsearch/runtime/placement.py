"""Where this worker process runs: its host and, under SLURM, its job and array task (stored on each trial it
runs, read back by ``hpsearch status``)."""

from __future__ import annotations

import os
import socket
import time
import zlib
from typing import Any

from hpsearch.storage.attrs import SLURM


def placement(environ: Any = os.environ) -> dict[str, str]:
    """``host`` and, under SLURM, the ``slurm_*`` ids that are set."""
    ids = {attr: environ[var] for attr, var in SLURM.items() if environ.get(var)}
    return {"host": socket.gethostname(), **ids}


def worker_salt(host: str | None = None, pid: int | None = None, job: str | None = None,
                clock_ns: int | None = None) -> int:
    """A number that differs between worker processes, on one host or many (the sampler's seed offset): a hash
    of the host, the process id, the SLURM job and the clock (each read here unless given)."""
    who = (f"{host or socket.gethostname()}:{os.getpid() if pid is None else pid}:"
           f"{os.environ.get('SLURM_JOB_ID', '') if job is None else job}:"
           f"{time.time_ns() if clock_ns is None else clock_ns}")
    return zlib.crc32(who.encode())
