"""The ``hpsearch`` command line: thin click commands over the library.

Errors are converted in one place (:func:`main`): spec and usage problems exit 2, runtime problems exit 1,
each as one line on stderr; ``-v`` adds tracebacks.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import warnings
from pathlib import Path

import click
import optuna

from hpsearch import __version__
from hpsearch.errors import HpsearchError, SpecError
from hpsearch.progress import state_counts, summary
from hpsearch.space import describe
from hpsearch.spec import load_spec
from hpsearch.storage import mask_secrets, mask_url, open_storage, resolve_url
from hpsearch.study import load_study

STORAGE_HELP = "Storage URL (default: $HPSEARCH_STORAGE or sqlite:///hpsearch.db)."


class QuietOptuna(logging.Filter):
    """Drops Optuna's records that hpsearch already reports in its own words."""

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        # a failed trial's own line (with its reason) comes from the progress output; the traceback from the log file
        return "failed with value None" not in msg and "Surplus(" not in msg and "failed with parameters" not in msg


class OneLineFormatter(logging.Formatter):
    """Log records without tracebacks: the console gets one line per problem."""

    def format(self, record: logging.LogRecord) -> str:
        record = logging.makeLogRecord(record.__dict__)
        record.exc_info = record.exc_text = None
        return super().format(record)


def setup_logging(verbose: bool, log_file: str | None = None) -> None:
    """Console: one line per problem (tracebacks with -v). ``log_file``: every record with its traceback
    (failed trials' included), appended, one file that all local workers share."""
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    handler = logging.StreamHandler(sys.stderr)
    fmt = "[%(levelname)s %(name)s] %(message)s"
    handler.setFormatter(logging.Formatter(fmt) if verbose else OneLineFormatter(fmt))
    handler.setLevel(logging.DEBUG if verbose else logging.WARNING)
    handler.addFilter(QuietOptuna())
    handlers: list[logging.Handler] = [handler]
    if log_file:
        try:
            fh = logging.FileHandler(log_file, encoding="utf-8")
        except OSError as e:
            raise click.BadParameter(f"cannot open {log_file!r}: {e.strerror}", param_hint="--log-file") from None
        fh.setFormatter(logging.Formatter(f"%(asctime)s pid {os.getpid()} [%(levelname)s %(name)s] %(message)s"))
        handlers.append(fh)
    optuna.logging.disable_default_handler()
    for name in ("optuna", "hpsearch"):
        lg = logging.getLogger(name)
        lg.handlers[:] = handlers
        lg.propagate = False
        lg.setLevel(logging.DEBUG if (verbose or log_file) and name == "hpsearch" else logging.WARNING)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="hpsearch")
@click.option("-v", "--verbose", is_flag=True, help="Show debug logs and tracebacks of failed trials.")
@click.option("--log-file", envvar="HPSEARCH_LOG_FILE", type=click.Path(dir_okay=False),
              help="Append the full log, tracebacks of failed trials included, to this file "
              "(default: $HPSEARCH_LOG_FILE; local workers inherit it).")
@click.pass_context
def cli(ctx: click.Context, verbose: bool, log_file: str | None) -> None:
    """Hyperparameter search for CNN image classifiers, on Optuna and PyTorch."""
    ctx.obj = {"verbose": verbose}
    if log_file:
        os.environ["HPSEARCH_LOG_FILE"] = log_file = str(Path(log_file).resolve())  # for `run --workers N`
    setup_logging(verbose, log_file)


def worker_options(f):
    """Options shared by `run` and `worker`."""
    opts = [
        click.option("--n-trials", type=click.IntRange(min=1), help="Finished trials the study should hold in total."),
        click.option("--timeout", type=click.FloatRange(min=0, min_open=True), callback=_check_finite,
                     help="Start no trial after S seconds."),
        click.option("--device", callback=_check_device, help="auto, cpu, cuda or cuda:N (overrides train.device)."),
        click.option("--data-dir", type=click.Path(file_okay=False), help="Folder holding the dataset files."),
        click.option("--artifacts", help="Checkpoint store: a folder every worker sees, or s3://bucket/prefix "
                     "(default: $HPSEARCH_ARTIFACTS or ./hpsearch-artifacts)."),
        click.option("--heartbeat-interval", type=click.IntRange(min=1), default=60, show_default=True,
                     help="Seconds between heartbeats of a running trial (RDB storages)."),
        click.option("--grace-period", type=click.IntRange(min=2), default=180, show_default=True,
                     help="Seconds without a heartbeat before a trial counts as dead and is re-queued."),
        click.option("--max-retry", type=click.IntRange(min=0), default=1, show_default=True,
                     help="How often a dead worker's trial is re-queued."),
        click.option("--keep-best", type=click.IntRange(min=0), default=3, show_default=True,
                     help="Completed trials whose checkpoints are kept."),
    ]
    for opt in reversed(opts):
        f = opt(f)
    return f


def _check_finite(_ctx, _param, value):
    if value is not None and not math.isfinite(value):  # FloatRange lets nan through: nan > 0 is False
        raise click.BadParameter(f"{value} is not a finite number of seconds")
    return value


def _check_device(_ctx, _param, value):
    from hpsearch.spec import DEVICE_RE

    if value is not None and not DEVICE_RE.match(value):
        raise click.BadParameter(f"{value!r} is not a device; use auto, cpu, cuda or cuda:N")
    return value


def _check_study_name(_ctx, _param, value):
    """A study name becomes part of file names (reports): no path separators, no leading dot."""
    from hpsearch.spec import STUDY_NAME_RE

    if value is not None and not STUDY_NAME_RE.match(value):
        raise click.BadParameter(f"{value!r} is not a study name; use 1-128 letters, digits, _ . - (starting with "
                                 "a letter or digit)")
    return value


def _heartbeat(interval: int, grace: int, max_retry: int):
    from hpsearch.storage import Heartbeat

    if grace <= interval:
        raise click.BadParameter(f"is {grace}, but must exceed --heartbeat-interval ({interval})",
                                 param_hint="--grace-period")
    return Heartbeat(interval, grace, max_retry)


@cli.command()
@click.argument("spec_path", metavar="SPEC", type=click.Path(dir_okay=False))
@click.option("--storage", help=STORAGE_HELP)
@click.option("--study", "study_name", callback=_check_study_name, help="Study name (default: the spec's study.name).")
@click.option("--seed", type=click.IntRange(min=0), help="Overrides study.seed.")
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True,
              help="Local worker processes sharing the study.")
@click.option("--gpus", help="Comma-separated GPU ids: one worker per GPU (with --workers, round-robin).")
@click.option("--force-spec", is_flag=True, help="Replace the spec stored in an existing study by SPEC.")
@worker_options
@click.pass_context
def run(ctx, spec_path, storage, study_name, seed, workers, gpus, force_spec, n_trials, timeout, device, data_dir,
        artifacts, heartbeat_interval, grace_period, max_retry, keep_best) -> None:
    """Run (or continue) the study described by SPEC until it holds n_trials finished trials."""
    from hpsearch.runner import with_overrides  # imports torch: keep `--help` fast
    from hpsearch.worker import run as run_here

    hb = _heartbeat(heartbeat_interval, grace_period, max_retry)
    spec = with_overrides(load_spec(spec_path), n_trials, timeout, device, seed)
    url = resolve_url(storage)
    gpu_list = [g.strip() for g in gpus.split(",") if g.strip()] if gpus else None
    if gpu_list and workers == 1:
        workers = len(gpu_list)
    if workers == 1:
        ctx.exit(run_here(spec, url, study_name, data_dir, artifacts, hb, keep_best, force_spec=force_spec))
    from hpsearch.launcher import launch
    from hpsearch.study import open_study

    name = study_name or spec.study.name
    study = open_study(spec, open_storage(url, hb), name, force_spec=force_spec)
    args = _forward(n_trials=n_trials, timeout=timeout, device=device, data_dir=data_dir, artifacts=artifacts,
                    heartbeat_interval=heartbeat_interval, grace_period=grace_period, max_retry=max_retry,
                    keep_best=keep_best)
    code = launch(workers, url, name, args, gpu_list)
    click.echo(summary(study), err=True)
    ctx.exit(code)


def _forward(**options) -> list[str]:
    out: list[str] = []
    for k, v in options.items():
        if v is not None:
            out += [f"--{k.replace('_', '-')}", str(v)]
    return out


@cli.command()
@click.option("--storage", help=STORAGE_HELP)
@click.option("--study", "study_name", required=True, help="The study to join.")
@worker_options
@click.pass_context
def worker(ctx, storage, study_name, n_trials, timeout, device, data_dir, artifacts, heartbeat_interval,
           grace_period, max_retry, keep_best) -> None:
    """Join an existing study (on any host) and run its trials; the study's stored spec is used."""
    from hpsearch.worker import join

    hb = _heartbeat(heartbeat_interval, grace_period, max_retry)
    overrides = {"n_trials": n_trials, "timeout": timeout, "device": device}
    ctx.exit(join(resolve_url(storage), study_name, overrides, data_dir, artifacts, hb, keep_best))


@cli.group("storage")
def storage_group() -> None:
    """Storage utilities."""


@storage_group.command("serve")
@click.option("--storage", help=STORAGE_HELP)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=click.IntRange(1, 65535), default=13000, show_default=True)
def storage_serve(storage, host, port) -> None:
    """Serve STORAGE through Optuna's gRPC proxy (workers then use grpc://HOST:PORT)."""
    url = resolve_url(storage)
    st = open_storage(url)
    if host in ("0.0.0.0", "::"):
        click.echo(f"warning: serving on all interfaces ({host}); anyone who can reach port {port} can change "
                   "studies", err=True)
    click.echo(f"serving {mask_url(url)} on grpc://{host}:{port}", err=True)
    optuna.storages.run_grpc_proxy_server(st, host=host, port=port)


@cli.command()
@click.argument("spec_path", metavar="SPEC", type=click.Path(dir_okay=False))
def validate(spec_path) -> None:
    """Check SPEC and print its search space."""
    spec = load_spec(spec_path)
    s, d, t = spec.study, spec.data, spec.train
    click.echo(f"study {s.name}: seed {s.seed}, n_trials {s.n_trials}, timeout {s.timeout or 'none'}")
    click.echo(f"data {d.dataset}: val_fraction {d.val_fraction:.4g}" + (f", val_size {d.val_size}" if d.val_size else ""))
    click.echo(f"train: max_epochs {t.max_epochs}, eval_every {t.eval_every} epochs, device {t.device}, "
               f"precision {t.precision}, schedule {t.schedule}")
    click.echo(f"sampler {spec.sampler.name} {spec.sampler.options or ''}".rstrip())
    click.echo(f"pruner {spec.pruner.name} {spec.pruner.options or ''}".rstrip())
    click.echo("space:")
    width = max(len(n) for n, _ in describe(spec.space))
    for name, text in describe(spec.space):
        click.echo(f"  {name:<{width}}  {text}")
    if spec.enqueue:
        click.echo(f"warm start: {len(spec.enqueue)} enqueued configuration(s)")


def _study_status(study: optuna.Study) -> dict:
    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state.name == "COMPLETE"]
    best = max(complete, key=lambda t: t.value) if complete else None
    return {"study": study.study_name, "trials": len(trials), "states": state_counts(trials),
            "best_value": best.value if best else None, "best_trial": best.number if best else None,
            "resumed": [{"trial": t.number, "from_trial": t.user_attrs["resumed_from_trial"],
                         "at_epoch": t.user_attrs.get("resumed_at_epoch")}
                        for t in trials if "resumed_from_trial" in t.user_attrs]}


@cli.command()
@click.option("--storage", help=STORAGE_HELP)
@click.option("--study", "study_name", help="One study (default: all studies in the storage).")
@click.option("--artifacts", help="Checkpoint store to measure (default: $HPSEARCH_ARTIFACTS or ./hpsearch-artifacts).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def status(storage, study_name, artifacts, as_json) -> None:
    """Trial counts by state and the best value, per study; checkpoint disk use."""
    from hpsearch.checkpoint import disk_usage

    url = resolve_url(storage)
    st = open_storage(url, heartbeat=None)
    names = [study_name] if study_name else optuna.get_all_study_names(st)
    rows = [_study_status(load_study(st, n)) for n in names]
    used = disk_usage(artifacts)
    if as_json:
        click.echo(json.dumps({"storage": mask_url(url), "artifact_bytes": used, "studies": rows}, indent=2))
        return
    click.echo(f"storage {mask_url(url)}: {len(rows)} studies; checkpoints use "
               + (f"{used / 1e6:.1f} MB" if used is not None else "an object store"))
    for r in rows:
        best = f"best {r['best_value']:.2f}% (trial {r['best_trial']})" if r["best_value"] is not None else "no best yet"
        counts = "  ".join(f"{s} {n}" for s, n in r["states"].items())
        click.echo(f"{r['study']}: {r['trials']} trials  {counts}  {best}")
        for x in r["resumed"]:
            click.echo(f"  trial {x['trial']} resumed trial {x['from_trial']} at epoch {x['at_epoch']}")


@cli.command()
@click.option("--storage", help=STORAGE_HELP)
@click.option("--study", "study_name", required=True, help="Study name.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (the default is a summary).")
def best(storage, study_name, as_json) -> None:
    """The best completed trial: number, val Top-1, parameters and attributes."""
    study = load_study(open_storage(resolve_url(storage), heartbeat=None), study_name)
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if not complete:
        raise HpsearchError(f"study {study_name!r} has no completed trial yet")
    t = study.best_trial
    if as_json:
        click.echo(json.dumps({"number": t.number, "value": t.value, "metric": "val_top1", "params": t.params,
                               "user_attrs": t.user_attrs}, indent=2, default=str))
    else:
        click.echo(summary(study))


@cli.command()
@click.option("--storage", help=STORAGE_HELP)
@click.option("--artifacts", help="Artifact store the workers used (default: $HPSEARCH_ARTIFACTS or "
              "./hpsearch-artifacts).")
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to bind (0.0.0.0: all).")
@click.option("--port", type=click.IntRange(1, 65535), default=8080, show_default=True)
def dashboard(storage, artifacts, host, port) -> None:
    """Serve optuna-dashboard on the study storage, with checkpoints and trial artifacts viewable."""
    import optuna_dashboard

    from hpsearch.checkpoint import open_artifact_store

    url = resolve_url(storage)
    st = open_storage(url, heartbeat=None)
    if host in ("0.0.0.0", "::"):
        click.echo(f"warning: the dashboard listens on all interfaces ({host}); anyone who can reach port "
                   f"{port} can read and change the studies", err=True)
    click.echo(f"optuna-dashboard for {mask_url(url)} on http://{host}:{port}/ (Ctrl-C to stop)", err=True)
    optuna_dashboard.run_server(st, host=host, port=port, artifact_store=open_artifact_store(artifacts))


@cli.command()
@click.option("--storage", help=STORAGE_HELP)
@click.option("--study", "study_name", required=True, help="Study name.")
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="HTML file (default: dashboards/<study>.html).")
@click.option("--dashboard", "layout", default="overview", show_default=True,
              help="Layout: a name in dashboards/ or a path to a .toml file.")
def report(storage, study_name, output, layout) -> None:
    """Write a self-contained HTML report of a study (plotly.js embedded: it opens offline)."""
    from hpsearch.report import write_report

    url = resolve_url(storage)
    study = load_study(open_storage(url, heartbeat=None), study_name)
    from hpsearch.spec import STUDY_NAME_RE

    if output is None and not STUDY_NAME_RE.match(study_name):  # a stored name like '../x' must not pick a path
        raise SpecError(f"study name {study_name!r} cannot name a file in dashboards/; pass -o FILE.html")
    path = write_report(study, output or f"dashboards/{study_name}.html", layout, storage_url=url)
    click.echo(f"wrote {path}")


@cli.command()
@click.option("--storage", help=STORAGE_HELP)
@click.option("--study", "study_name", required=True, help="Study name.")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="FILE.csv or FILE.json.")
def export(storage, study_name, output) -> None:
    """Write one row per trial (state, value, parameters, attributes, times) as CSV or JSON."""
    from hpsearch.export import export_trials

    url = resolve_url(storage)
    study = load_study(open_storage(url, heartbeat=None), study_name)
    click.echo(f"wrote {export_trials(study, output, storage_url=url)}")


@cli.group("data")
def data_group() -> None:
    """Dataset utilities."""


@data_group.command("prepare")
@click.argument("kind", type=click.Choice(["imagefolder"]))
@click.argument("root", type=click.Path(file_okay=False))
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Cache folder to write.")
@click.option("--size", type=click.IntRange(min=8, max=1024), default=64, show_default=True,
              help="Side of the cached images (shorter-side resize + center crop).")
@click.option("--classes", help="A class count (the first N, sorted) or comma-separated class folder names.")
@click.option("--fraction", type=click.FloatRange(0, 1, min_open=True), default=1.0, show_default=True,
              help="Fraction of each class's images.")
@click.option("--val-fraction", type=click.FloatRange(0, 0.9, min_open=True), default=0.1, show_default=True,
              help="Held out of train/ when the tree has no val/.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--workers", type=click.IntRange(min=0), default=0, show_default=True,
              help="Decoding processes (0: in this process).")
def data_prepare(kind, root, out, size, classes, fraction, val_fraction, seed, workers) -> None:
    """Decode an ImageFolder tree once into a low-resolution cache (resumable)."""
    from hpsearch.data.cache import prepare_cache

    parsed = None
    if classes:
        parsed = int(classes) if classes.strip().isdigit() else [c.strip() for c in classes.split(",") if c.strip()]
    info = prepare_cache(root, out, size, parsed, fraction, val_fraction, seed, workers, progress=True)
    click.echo(f"cache {info.path}: {info.n_train} train + {info.n_val} val images of {len(info.classes)} classes "
               f"at {info.size} px; {info.skipped} unreadable skipped; {info.seconds:.1f} s")


@cli.command()
@click.option("--storage", help=STORAGE_HELP)
@click.option("--study", "study_name", required=True, help="Study name.")
@click.option("--trial", "trial_number", type=click.IntRange(min=0), help="Trial to retrain (default: the best).")
@click.option("--epochs", type=click.IntRange(min=1), help="Epochs (default: the study's train.max_epochs).")
@click.option("--device", callback=_check_device, help="auto, cpu, cuda or cuda:N.")
@click.option("--data-dir", type=click.Path(file_okay=False), help="Folder holding the dataset files.")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="Model file to write.")
def retrain(storage, study_name, trial_number, epochs, device, data_dir, output) -> None:
    """Retrain a trial's configuration on train+val, test it once, and write a model file."""
    from hpsearch.retrain import retrain as do_retrain

    study = load_study(open_storage(resolve_url(storage), heartbeat=None), study_name)
    do_retrain(study, output, trial_number, epochs, device, data_dir)


@cli.command()
@click.option("--model", "model_file", required=True, type=click.Path(dir_okay=False), help="A model file.")
@click.argument("inputs", nargs=-1, required=True, metavar="IMAGE_OR_DIR...")
@click.option("--top-k", type=click.IntRange(min=1), default=5, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--device", callback=_check_device, default="cpu", show_default=True)
def predict(model_file, inputs, top_k, as_json, device) -> None:
    """Classify images (files or folders) with a model file written by `retrain`."""
    from hpsearch.device import resolve_device
    from hpsearch.predict import predict as do_predict

    preds, skipped = do_predict(model_file, list(inputs), top_k, str(resolve_device(device)))
    if as_json:
        click.echo(json.dumps({"predictions": [{"path": p.path, "top": [{"class": c, "probability": v}
                                                                         for c, v in p.top]} for p in preds],
                               "skipped": skipped}, indent=2))
    else:
        for p in preds:
            click.echo(f"{p.path}: " + ", ".join(f"{c} {v:.3f}" for c, v in p.top))
    if not preds:
        raise HpsearchError(f"no readable image among {len(skipped)} input(s)")


def main(argv: list[str] | None = None) -> None:
    """Console entry point: runs the CLI and turns every error into one line and an exit code."""
    args = sys.argv[1:] if argv is None else argv
    verbose = "-v" in args or "--verbose" in args
    try:
        code = cli.main(args=args, prog_name="hpsearch", standalone_mode=False)
        if isinstance(code, int) and code:  # ctx.exit(N) is returned, not raised, outside standalone mode
            sys.exit(code)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    except click.exceptions.Abort:
        print("hpsearch: interrupted", file=sys.stderr)
        sys.exit(130)
    except click.ClickException as e:
        cmd = f" {e.ctx.command_path.split(' ', 1)[1]}" if getattr(e, "ctx", None) and " " in e.ctx.command_path else ""
        print(f"hpsearch{cmd}: error: {e.format_message()}", file=sys.stderr)
        sys.exit(e.exit_code)
    except HpsearchError as e:
        if verbose:
            logging.getLogger("hpsearch").exception("details")
        print(f"hpsearch: error: {e}", file=sys.stderr)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        print("hpsearch: interrupted", file=sys.stderr)
        sys.exit(130)
    except Exception as e:  # an unexpected runtime fault: one line (masked), traceback only with -v
        if verbose:
            logging.getLogger("hpsearch").exception("unexpected error")
        msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
        print(f"hpsearch: error: {type(e).__name__}: {mask_secrets(msg, None)}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
