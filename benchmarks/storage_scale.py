"""Storage at scale: W worker processes reporting into one study, per storage backend.

    python benchmarks/storage_scale.py [--quick] [--backends sqlite,postgresql,...] [--workers 1,4,16,32]
                                       [--trials 3] [--reports 20] [--cell-timeout 300]

Each cell (backend, W) is a fresh study: W processes (``benchmarks/_storage_worker.py``: Optuna and
``hpsearch.storage.urls`` only, no torch) open the storage as ``hpsearch worker`` does, wait at a start barrier,
then each run ``--trials`` trials of ``--reports`` ``trial.report`` + ``trial.should_prune`` calls
(MedianPruner; its verdict is counted, not obeyed, so every trial makes all its reports). Reported per cell:

- reports/s: successful report+should_prune calls of all workers / the span from the first worker's start to
  the last one's end (trial creation and finishing fall inside the span: it is the whole workload's rate);
- p50/p95 ms of one report+should_prune call, over all workers' calls;
- errors: calls or trials that raised, plus workers that crashed or were killed at the cell timeout;
- retries: storage calls that failed for a transient reason and were retried by hpsearch's
  ``RetryingStorage`` (its "storage: … failed (…); retrying" warnings, counted in each worker and, for gRPC,
  in the proxy's log); a call that succeeded after retries is not an error, so "0 errors" alone could hide
  them;
- database errors and lock events: driver exceptions SQLAlchemy saw in the workers (retried, raised or
  handled by the pool), of which "database is locked", lock-wait timeouts and deadlocks. Lock *waits* inside
  the database (SQLite's 60 s busy timeout, server-side row locks, Optuna's journal file lock) raise nothing
  and cannot be counted: they show only as latency (``_storage_worker.py`` says more);
- lost: intermediate values a worker wrote (``report`` returned) that a fresh storage handle does not read
  back from a finished trial, or whose trial is missing altogether (must be 0); for the gRPC proxy the values
  are read from the PostgreSQL behind it;
- finished: trials in a finished state / trials started (W × trials).

Backends: SQLite and journal files in a temporary folder; PostgreSQL, MariaDB and Redis on 127.0.0.1 (the
test services; Redis in its own database, 13, whose journal keys are removed afterwards if it started empty);
``grpc``: ``hpsearch storage serve`` in front of that PostgreSQL. An unreachable service is skipped, and the
table says so.
Studies are deleted after each cell. Each worker's event log, result (latencies in ms) and stderr are kept in
``storage_scale_logs/BACKEND-wW/`` beside the JSON (replaced on every run), the gRPC proxy's log as
``storage_scale_logs/grpc-proxy.log``.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path

import optuna
from optuna.trial import TrialState

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))
from _common import OneLineParser, csv_list, positive_int, results_dir, write_result  # noqa: E402

from hpsearch.storage.urls import mask_url, open_storage  # noqa: E402

WORKER = HERE / "_storage_worker.py"
BACKENDS = ("sqlite", "postgresql", "mysql", "journal", "redis", "grpc")
SERVERS = {  # the test services (tests/services.py); redis in a database of its own
    "postgresql": ("postgresql+psycopg://postgres@127.0.0.1:5432/test", 5432, "psycopg"),
    "mysql": ("mysql+pymysql://root@127.0.0.1:3306/test", 3306, "pymysql"),
    "redis": ("redis://127.0.0.1:6379/13", 6379, "redis"),
}
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
POLL_S = 0.05
RETRY_LINE = re.compile(r"storage: \S+ failed \(.*\); retrying")  # hpsearch.storage.retry's warning
LOCK_LINE = re.compile(r"database is locked|lock wait timeout|deadlock", re.IGNORECASE)


class Skip(Exception):
    """A backend that cannot run here (service down, driver missing): the reason is reported."""


def percentile(xs: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100) of ``xs``; None when empty."""
    if not xs:
        return None
    s = sorted(xs)
    return s[max(0, math.ceil(q / 100 * len(s)) - 1)]


def reachable(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            return True
    except OSError:
        return False


def missing_driver(module: str) -> str | None:
    try:
        __import__(module)
        return None
    except ImportError:
        return f"the {module} package is not installed"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ───────────────────────────── one cell: W workers on one backend ─────────────────────────────


def read_back(admin_url: str, name: str, written: dict[int, dict[int, float]]) -> dict:
    """Compares what the workers wrote with what a fresh storage handle reads from the study."""
    study = optuna.load_study(study_name=name, storage=open_storage(admin_url, heartbeat=None))
    trials = {t.number: t for t in study.get_trials(deepcopy=False)}
    lost = unfinished = 0
    for number, values in written.items():
        t = trials.get(number)
        if t is None:
            lost += len(values)  # the worker saw a trial that the storage does not have
        elif t.state not in FINISHED:
            unfinished += 1
        else:
            lost += sum(not (step in t.intermediate_values and math.isclose(t.intermediate_values[step], v))
                        for step, v in values.items())
    states = Counter(t.state.name for t in trials.values())
    return {"lost": lost, "unfinished_written": unfinished, "states": dict(states),
            "trials_finished": sum(states[s.name] for s in FINISHED)}


def spawn_and_wait(procs: list[subprocess.Popen], work: Path, url: str, name: str, w: int, n_trials: int,
                   n_reports: int, deadline: float) -> tuple[float, int]:
    """Starts W workers (appended to ``procs``), releases them together, waits; returns (ready s, killed)."""
    for i in range(w):
        with open(work / f"stderr-{i}.txt", "w") as err:
            argv = [sys.executable, str(WORKER), url, name, str(n_trials), str(n_reports), str(work), str(i),
                    str(os.getpid())]
            procs.append(subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                          stderr=err))
    t_spawn = time.monotonic()
    # the barrier: go when every worker is connected (or has died), or at the deadline
    while time.monotonic() < deadline:
        if all((work / f"ready-{i}").exists() or p.poll() is not None for i, p in enumerate(procs)):
            break
        time.sleep(POLL_S)
    ready_s = time.monotonic() - t_spawn
    (work / "go").touch()
    while time.monotonic() < deadline and any(p.poll() is None for p in procs):
        time.sleep(POLL_S)
    killed = 0
    for p in procs:
        if p.poll() is None:
            p.kill()
            killed += 1
        p.wait()
    return ready_s, killed


def keep_logs(work: Path, i: int, logs: Path) -> None:
    """Copies worker ``i``'s event log, its result (latencies in ms, 3 decimals; the values it wrote as a count,
    the comparison with the storage being the cell's ``lost``) and a non-empty stderr."""
    logs.mkdir(parents=True, exist_ok=True)
    for name in (f"log-{i}.txt", f"stderr-{i}.txt"):
        src = work / name
        if src.exists() and src.stat().st_size:
            shutil.copyfile(src, logs / name.replace("log-", "worker-").replace("stderr-", "worker-stderr-"))
    result = work / f"result-{i}.json"
    if result.exists():
        r = json.loads(result.read_text())
        r["latencies_ms"] = [round(x * 1000, 3) for x in r.pop("latencies_s")]
        r["values_written"] = sum(len(v) for v in r.pop("written").values())
        (logs / f"worker-{i}.json").write_text(json.dumps(r, separators=(",", ":")))


def collect(procs: list[subprocess.Popen], work: Path, logs: Path) -> dict:
    """Merges the workers' result files; a worker without one is an error, told by its last stderr line."""
    out = {"latencies": [], "written": {}, "errors": Counter(), "starts": [], "ends": [], "prune_votes": 0,
           "retries": Counter(), "warnings": Counter(), "db_errors": Counter(), "lock_events": 0}
    for i, p in enumerate(procs):
        keep_logs(work, i, logs)
        result = work / f"result-{i}.json"
        if not result.exists():
            lines = (work / f"stderr-{i}.txt").read_text().strip().splitlines()
            why = lines[-1] if lines else f"exit {p.returncode}"
            if p.returncode == -signal.SIGKILL:
                why = "killed at the cell timeout"
            out["errors"][f"worker did not finish: {mask_url(why)[:200]}"] += 1
            continue
        r = json.loads(result.read_text())
        out["latencies"] += r["latencies_s"]
        for number, values in r["written"].items():
            out["written"][int(number)] = {int(s): v for s, v in values.items()}
        out["errors"].update(r["errors"])
        out["starts"].append(r["start"])
        out["ends"].append(r["end"])
        out["prune_votes"] += r["prune_votes"]
        for key in ("retries", "warnings", "db_errors"):
            out[key].update(r[key])
        out["lock_events"] += r["lock_events"]
    return out


def count_server_events(server_log: Path | None, offset: int) -> tuple[Counter, int, int]:
    """Retries and lock events the gRPC proxy logged after byte ``offset``: (retry kinds, locks, new offset)."""
    retries: Counter[str] = Counter()
    locks = 0
    if server_log is None or not server_log.exists():
        return retries, locks, offset
    with open(server_log, "rb") as f:
        f.seek(offset)
        text = f.read().decode(errors="replace")
        offset = f.tell()
    for line in text.splitlines():
        if m := RETRY_LINE.search(line):
            retries["proxy: " + m.group(0).split(": ", 1)[1].split(";")[0]] += 1
        locks += bool(LOCK_LINE.search(line))
    return retries, locks, offset


def run_cell(url: str, admin_url: str, w: int, n_trials: int, n_reports: int, timeout: float, logs: Path,
             server_log: Path | None = None) -> dict:
    name = f"storage-scale-w{w}-{uuid.uuid4().hex[:8]}"
    log_offset = server_log.stat().st_size if server_log is not None and server_log.exists() else 0
    load_before = os.getloadavg()[0]  # the machine is shared: say how busy it was
    admin = open_storage(admin_url, heartbeat=None)
    optuna.create_study(study_name=name, storage=admin, direction="maximize")
    procs: list[subprocess.Popen] = []
    try:
        with tempfile.TemporaryDirectory(prefix="storage-scale-") as tmp:
            try:
                ready_s, killed = spawn_and_wait(procs, Path(tmp), url, name, w, n_trials, n_reports,
                                                 time.monotonic() + timeout)
            finally:  # an interrupted benchmark leaves no workers behind
                for p in procs:
                    if p.poll() is None:
                        p.kill()
                        p.wait()
            r = collect(procs, Path(tmp), logs)
        lat, errors = r["latencies"], r["errors"]
        proxy_retries, proxy_locks, _ = count_server_events(server_log, log_offset)
        retries = r["retries"] + proxy_retries
        span = max(r["ends"]) - min(r["starts"]) if r["starts"] else None
        back = read_back(admin_url, name, r["written"])
        return {"workers": w, "reports": len(lat),
                "reports_per_s": round(len(lat) / span, 1) if span else None,
                "p50_ms": _ms(percentile(lat, 50)), "p95_ms": _ms(percentile(lat, 95)),
                "errors": sum(errors.values()), "error_kinds": dict(errors),
                "retries": sum(retries.values()), "retry_kinds": dict(retries),
                "db_errors": sum(r["db_errors"].values()), "db_error_kinds": dict(r["db_errors"]),
                "lock_events": r["lock_events"] + proxy_locks, "warnings": dict(r["warnings"]),
                "loadavg_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)], "lost": back["lost"],
                "trials_finished": back["trials_finished"], "trials_started": w * n_trials,
                "unfinished_written": back["unfinished_written"], "states": back["states"],
                "killed_at_timeout": killed, "prune_votes": r["prune_votes"], "ready_s": round(ready_s, 1),
                "span_s": round(span, 2) if span else None}
    finally:
        with contextlib.suppress(Exception):
            optuna.delete_study(study_name=name, storage=admin)


def _ms(s: float | None) -> float | None:
    return None if s is None else round(s * 1000, 2)


# ───────────────────────────── backends ─────────────────────────────


@contextlib.contextmanager
def grpc_proxy(db_url: str, log: Path):
    """``hpsearch storage serve`` in front of ``db_url`` on a free port, its stderr in ``log``; yields its
    grpc:// URL."""
    port = free_port()
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as err:
        server = subprocess.Popen([sys.executable, "-m", "hpsearch.cli", "storage", "serve", "--storage", db_url,
                                   "--port", str(port)], stdout=subprocess.DEVNULL, stderr=err)
    url = f"grpc://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                open_storage(url, heartbeat=None)
                break
            except Exception:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the gRPC proxy on port {port} did not start (exit {server.poll()})"
                                       ) from None
                time.sleep(0.5)
        yield url
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


@contextlib.contextmanager
def redis_db(url: str):
    """Yields ``url``; removes the journal's keys afterwards if the database was empty before (ours alone)."""
    import redis

    client = redis.Redis.from_url(url)
    was_empty = client.dbsize() == 0
    try:
        yield url
    finally:
        if was_empty:  # the journal keeps every log entry forever, deleted studies included
            keys = [":log_number", ":snapshot", *client.scan_iter(match=":log:*", count=1000)]
            for i in range(0, len(keys), 1000):
                client.delete(*keys[i:i + 1000])
        client.close()


@contextlib.contextmanager
def backend_url(backend: str, tmp: Path, logs: Path):
    """Yields (url workers use, url the parent reads back from), or raises Skip(reason)."""
    if backend == "sqlite":
        yield f"sqlite:///{tmp / 'bench.db'}", f"sqlite:///{tmp / 'bench.db'}"
        return
    if backend == "journal":
        yield f"journal:///{tmp / 'bench.log'}", f"journal:///{tmp / 'bench.log'}"
        return
    server = "postgresql" if backend == "grpc" else backend
    url, port, driver = SERVERS[server]
    if not reachable(port):
        raise Skip(f"{server} is not reachable on 127.0.0.1:{port}")
    if why := missing_driver(driver) or (backend == "grpc" and missing_driver("grpc")):
        raise Skip(why)
    if backend == "grpc":
        with grpc_proxy(url, logs / "grpc-proxy.log") as proxy:
            yield proxy, url
    elif backend == "redis":
        with redis_db(url):
            yield url, url
    else:
        yield url, url


# ───────────────────────────── main ─────────────────────────────


def table(cells: list[dict]) -> str:
    head = f"{'backend':<11}{'W':>3}{'reports/s':>11}{'p50 ms':>9}{'p95 ms':>9}{'errors':>8}{'retries':>8}" \
           f"{'db err':>7}{'locks':>6}{'lost':>6}{'finished':>10}  note"
    rows = [head, "-" * len(head)]
    for c in cells:
        if "skipped" in c:
            rows.append(f"{c['backend']:<11}{'-':>3}  skipped: {c['skipped']}")
            continue
        if "failed" in c:
            rows.append(f"{c['backend']:<11}{c['workers']:>3}  failed: {c['failed'][:100]}")
            continue
        note = []
        if c["killed_at_timeout"]:
            note.append(f"{c['killed_at_timeout']} killed at timeout")
        if c["errors"]:
            note.append("; ".join(f"{n}× {k}" for k, n in list(c["error_kinds"].items())[:2])[:120])
        fmt = lambda v, spec: "-" if v is None else format(v, spec)  # noqa: E731
        rows.append(f"{c['backend']:<11}{c['workers']:>3}{fmt(c['reports_per_s'], '.1f'):>11}"
                    f"{fmt(c['p50_ms'], '.1f'):>9}{fmt(c['p95_ms'], '.1f'):>9}{c['errors']:>8}{c['retries']:>8}"
                    f"{c['db_errors']:>7}{c['lock_events']:>6}{c['lost']:>6}"
                    f"{c['trials_finished']:>5}/{c['trials_started']:<4}  {' | '.join(note)}")
    return "\n".join(rows)


def main() -> None:
    ap = OneLineParser("storage_scale", description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="W in 1,4 and 1 trial per worker (a smoke run)")
    ap.add_argument("--backends", type=csv_list(str, BACKENDS), default=list(BACKENDS))
    ap.add_argument("--workers", type=csv_list(positive_int, what="of integers ≥ 1"), default=None, help="default 1,4,16,32 (--quick: 1,4)")
    ap.add_argument("--trials", type=positive_int, default=None, help="trials per worker (default 3, --quick 1)")
    ap.add_argument("--reports", type=positive_int, default=20, help="reports per trial")
    ap.add_argument("--cell-timeout", type=float, default=None, help="s per cell (default 300, --quick 120)")
    args = ap.parse_args()
    workers = args.workers or ([1, 4] if args.quick else [1, 4, 16, 32])
    n_trials = args.trials or (1 if args.quick else 3)
    timeout = args.cell_timeout or (120.0 if args.quick else 300.0)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the clean-ups: workers, studies, files

    logs = results_dir() / "storage_scale_logs"
    shutil.rmtree(logs, ignore_errors=True)  # the logs kept are those of the JSON this run writes
    cells: list[dict] = []
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="storage-scale-files-") as tmp:
        for backend in args.backends:
            try:
                with backend_url(backend, Path(tmp), logs) as (url, admin_url):
                    server_log = logs / "grpc-proxy.log" if backend == "grpc" else None
                    for w in workers:
                        try:
                            cell = {"backend": backend, **run_cell(url, admin_url, w, n_trials, args.reports,
                                                                   timeout, logs / f"{backend}-w{w}", server_log)}
                        except Exception as e:  # the cell could not even start: say why, go on
                            why = mask_url(f"{type(e).__name__}: {e}")
                            cell = {"backend": backend, "workers": w, "failed": why}
                            print(f"  {backend} W={w}: failed ({cell['failed'][:200]})", flush=True)
                        else:
                            print(f"  {backend} W={w}: {cell['reports_per_s']} reports/s, {cell['errors']} "
                                  f"errors, {cell['retries']} retries, {cell['db_errors']} database errors "
                                  f"({cell['lock_events']} lock events), {cell['lost']} lost ({cell['span_s']} s)",
                                  flush=True)
                        cells.append(cell)
            except Skip as e:
                cells.append({"backend": backend, "skipped": str(e)})
                print(f"  {backend}: skipped ({e})", flush=True)
    total_s = time.monotonic() - t0
    print(table(cells))
    payload = {"quick": args.quick, "workers": workers, "trials_per_worker": n_trials, "reports_per_trial":
               args.reports, "cell_timeout_s": timeout, "total_s": round(total_s, 1),
               "command": " ".join(["python", "benchmarks/storage_scale.py", *sys.argv[1:]]),
               "logs": str(logs), "not_counted": "lock waits inside the database (SQLite's 60 s busy timeout, "
               "server-side row locks, the journal file lock) raise nothing: they show only as latency",
               "cells": cells}
    print(f"wrote {write_result('storage_scale', payload)}")


if __name__ == "__main__":
    main()
