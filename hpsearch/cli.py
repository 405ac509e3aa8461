"""The ``hpsearch`` command line: click commands that parse their options, call one library function and print.

The root group owns what every command shares (``--storage`` with ``$HPSEARCH_STORAGE``, ``-v``,
``--log-file``) in a small typed context object; a command's own ``--storage`` overrides the root's, so both
``hpsearch --storage URL status`` and ``hpsearch status --storage URL`` work. Errors are converted in one place
(:func:`main`): spec and usage problems exit 2, runtime problems exit 1, each as one line on stderr; ``-v``
adds tracebacks. Library imports sit inside the commands: most of them import torch, and ``--help`` stays fast.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import click

from hpsearch import __version__
from hpsearch.errors import HpsearchError, first_line
from hpsearch.storage.urls import mask_secrets, resolve_url

STORAGE_HELP = "Storage URL (default: $HPSEARCH_STORAGE or sqlite:///hpsearch.db)."


@dataclass
class Context:
    """``ctx.obj``: the options the root group owns."""

    verbose: bool = False
    log_file: str | None = None
    storage: str | None = None  # --storage as given (root or command), else $HPSEARCH_STORAGE

    @property
    def storage_url(self) -> str:
        return resolve_url(self.storage)


pass_context = click.make_pass_decorator(Context)


def _set_storage(ctx: click.Context, _param, value: str | None) -> None:
    if value is not None:  # a command's --storage wins over the root's (and over $HPSEARCH_STORAGE)
        ctx.ensure_object(Context).storage = value


storage_option = click.option("--storage", help=STORAGE_HELP, expose_value=False, callback=_set_storage)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="hpsearch")
@click.option("--storage", envvar="HPSEARCH_STORAGE", help=STORAGE_HELP + " Every command takes it too.")
@click.option("-v", "--verbose", is_flag=True, help="Show debug logs and tracebacks of failed trials.")
@click.option("--log-file", envvar="HPSEARCH_LOG_FILE", type=click.Path(dir_okay=False),
              help="Append the full log, tracebacks of failed trials included, to this file "
              "(default: $HPSEARCH_LOG_FILE; local workers inherit it).")
@click.pass_context
def cli(ctx: click.Context, storage: str | None, verbose: bool, log_file: str | None) -> None:
    """Hyperparameter search for CNN image classifiers, on Optuna and PyTorch."""
    from hpsearch.logs import setup_logging

    if log_file:
        os.environ["HPSEARCH_LOG_FILE"] = log_file = str(Path(log_file).resolve())  # for `run --workers N`
    ctx.obj = Context(verbose, log_file, storage)
    setup_logging(verbose, log_file)


# ---- option checks and shared option groups ---------------------------------------------------------------


def _check_finite(_ctx, _param, value):
    if value is not None and not math.isfinite(value):  # FloatRange lets nan through: nan > 0 is False
        raise click.BadParameter(f"{value} is not a finite number")
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


# where pretrained weights come from (hpsearch.models.weights): run, worker, slurm and retrain take these
weights_options = [
    click.option("--weights-dir", envvar="HPSEARCH_WEIGHTS", type=click.Path(file_okay=False),
                 help="Folder of pretrained weights, NAME.safetensors or NAME.pth (default: $HPSEARCH_WEIGHTS, "
                 "else train.weights_dir)."),
    click.option("--offline", is_flag=True, envvar="HF_HUB_OFFLINE",
                 help="Never download pretrained weights: weights_dir or the library's cache only "
                 "(default: $HF_HUB_OFFLINE)."),
]


def worker_options(f):
    """Options shared by `run` and `worker`, passed to the command as one ``opts`` (a WorkerOptions)."""
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
        click.option("--pack", help="Trials trained as one fused model: K (1-64) or auto (overrides train.pack)."),
        click.option("--patience", type=click.IntRange(min=1),
                     help="Stop when N finished trials in a row did not improve the best (overrides study.patience)."),
        click.option("--min-delta", type=click.FloatRange(0, 100), callback=_check_finite,
                     help="Val Top-1 points an improvement needs, for --patience (default: study.min_delta, 0)."),
        click.option("--target", type=click.FloatRange(0, 100), callback=_check_finite,
                     help="Stop once a trial reaches this val Top-1 %% (overrides study.target)."),
        *weights_options,
    ]

    @functools.wraps(f)
    def wrapper(*args, n_trials, timeout, device, data_dir, artifacts, heartbeat_interval, grace_period, max_retry,
                keep_best, pack, patience, min_delta, target, weights_dir, offline, **kwargs):
        from hpsearch.runtime.options import WorkerOptions
        from hpsearch.spec import parse_pack
        from hpsearch.storage.urls import Heartbeat

        options = WorkerOptions(n_trials, timeout, device, data_dir, artifacts,
                                Heartbeat(heartbeat_interval, grace_period, max_retry), keep_best,
                                None if pack is None else parse_pack(pack, "--pack"), patience, min_delta, target,
                                weights_dir, offline)
        return f(*args, opts=options, **kwargs)

    for opt in reversed(opts):
        wrapper = opt(wrapper)
    return wrapper


# ---- searching ---------------------------------------------------------------------------------------------


@cli.command()
@click.argument("spec_path", metavar="SPEC", type=click.Path(dir_okay=False))
@storage_option
@click.option("--study", "study_name", callback=_check_study_name, help="Study name (default: the spec's study.name).")
@click.option("--seed", type=click.IntRange(min=0), help="Overrides study.seed.")
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True,
              help="Local worker processes sharing the study.")
@click.option("--gpus", help="Comma-separated GPU ids: one worker per GPU (with --workers, round-robin).")
@click.option("--force-spec", is_flag=True, help="Replace the spec stored in an existing study by SPEC.")
@worker_options
@pass_context
def run(obj: Context, spec_path, study_name, seed, workers, gpus, force_spec, opts) -> None:
    """Run (or continue) the study described by SPEC until it holds n_trials finished trials."""
    from hpsearch.runtime.launcher import launch_study, parse_gpus
    from hpsearch.spec import load_spec, with_overrides

    spec = with_overrides(load_spec(spec_path), seed=seed)
    sys.exit(launch_study(spec, obj.storage_url, study_name, opts, workers, parse_gpus(gpus), force_spec))


@cli.command()
@storage_option
@click.option("--study", "study_name", required=True, help="The study to join.")
@worker_options
@pass_context
def worker(obj: Context, study_name, opts) -> None:
    """Join an existing study (on any host) and run its trials; the study's stored spec is used."""
    from hpsearch.runtime.worker import join

    sys.exit(join(obj.storage_url, study_name, opts))


@cli.command()
@click.argument("spec_or_study", metavar="SPEC_OR_STUDY")
@storage_option
@click.option("--study", "study_name", callback=_check_study_name, help="Study name for SPEC (default: its study.name).")
@click.option("--array", type=click.IntRange(min=1), required=True, help="Array tasks: one worker each.")
@click.option("--gpus-per-task", type=click.IntRange(min=0), help="GPUs per task (SLURM sets CUDA_VISIBLE_DEVICES).")
@click.option("--cpus-per-task", type=click.IntRange(min=1), help="CPUs per task (also the worker's torch threads).")
@click.option("--time", "time_limit", help="Time limit per task, e.g. 04:00:00; SIGTERM comes 2 min before it.")
@click.option("--partition", help="SLURM partition.")
@click.option("--extra", multiple=True, help="An extra '#SBATCH ...' line (repeatable).")
@click.option("--script", type=click.Path(dir_okay=False), help="Script to write (default: slurm/STUDY.sbatch).")
@click.option("--submit", is_flag=True, help="Submit the script with sbatch and print the job id.")
@worker_options
@pass_context
def slurm(obj: Context, spec_or_study, study_name, array, gpus_per_task, cpus_per_task, time_limit, partition, extra, script,
          submit, opts) -> None:
    """Create the study (SPEC) or use an existing one (STUDY) and write an sbatch job array of workers on it."""
    from hpsearch.runtime.slurm import SlurmJob, launch_slurm

    job = SlurmJob(array, gpus_per_task, cpus_per_task, time_limit, partition, tuple(extra))
    launch_slurm(spec_or_study, obj.storage_url, study_name, job, opts, script, submit)


@cli.command()
@click.argument("spec_path", metavar="SPEC", type=click.Path(dir_okay=False))
def validate(spec_path) -> None:
    """Check SPEC and print its search space."""
    from hpsearch.search.space import describe_spec
    from hpsearch.spec import load_spec

    click.echo("\n".join(describe_spec(load_spec(spec_path))))


# ---- inspecting --------------------------------------------------------------------------------------------


@cli.command()
@storage_option
@click.option("--study", "study_name", help="One study (default: all studies in the storage).")
@click.option("--artifacts", help="Checkpoint store to measure (default: $HPSEARCH_ARTIFACTS or ./hpsearch-artifacts).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@pass_context
def status(obj: Context, study_name, artifacts, as_json) -> None:
    """Trial counts by state and the best value, per study; checkpoint disk use."""
    from hpsearch.inspect.status import format_status, storage_status

    click.echo(format_status(storage_status(obj.storage_url, study_name, artifacts), as_json))


@cli.command()
@storage_option
@click.option("--study", "study_name", required=True, help="Study name.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (the default is a summary).")
@pass_context
def best(obj: Context, study_name, as_json) -> None:
    """The best completed trial: number, val Top-1, parameters and attributes."""
    from hpsearch.inspect.status import best_report
    from hpsearch.search.study import open_existing

    click.echo(best_report(open_existing(obj.storage_url, study_name), as_json))


@cli.command()
@storage_option
@click.option("--artifacts", help="Artifact store the workers used (default: $HPSEARCH_ARTIFACTS or "
              "./hpsearch-artifacts).")
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to bind (0.0.0.0: all).")
@click.option("--port", type=click.IntRange(1, 65535), default=8080, show_default=True)
@pass_context
def dashboard(obj: Context, artifacts, host, port) -> None:
    """Serve optuna-dashboard on the study storage, with checkpoints and trial artifacts viewable."""
    from hpsearch.inspect.dashboard import serve_dashboard

    serve_dashboard(obj.storage_url, artifacts, host, port)


@cli.command()
@storage_option
@click.option("--study", "study_name", required=True, help="Study name.")
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="HTML file (default: dashboards/<study>.html).")
@click.option("--dashboard", "layout", default="overview", show_default=True,
              help="Layout: a name (your ./dashboards/NAME.toml, else a built-in one) or a path to a .toml file.")
@pass_context
def report(obj: Context, study_name, output, layout) -> None:
    """Write a self-contained HTML report of a study (plotly.js embedded: it opens offline)."""
    from hpsearch.inspect.report import default_report_path, write_report
    from hpsearch.search.study import open_existing

    study = open_existing(obj.storage_url, study_name)
    path = write_report(study, output or default_report_path(study_name), layout, storage_url=obj.storage_url)
    click.echo(f"wrote {path}")


@cli.command()
@storage_option
@click.option("--study", "study_name", required=True, help="Study name.")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="FILE.csv or FILE.json.")
@pass_context
def export(obj: Context, study_name, output) -> None:
    """Write one row per trial (state, value, parameters, attributes, times) as CSV or JSON."""
    from hpsearch.inspect.export import export_trials
    from hpsearch.search.study import open_existing

    click.echo(f"wrote {export_trials(open_existing(obj.storage_url, study_name), output, obj.storage_url)}")


# ---- storage and data utilities ----------------------------------------------------------------------------


@cli.group("storage")
def storage_group() -> None:
    """Storage utilities."""


@storage_group.command("serve")
@storage_option
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=click.IntRange(1, 65535), default=13000, show_default=True)
@pass_context
def storage_serve(obj: Context, host, port) -> None:
    """Serve STORAGE through Optuna's gRPC proxy (workers then use grpc://HOST:PORT)."""
    from hpsearch.storage.urls import serve_storage

    serve_storage(obj.storage_url, host, port)


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
    from hpsearch.data.cache import parse_classes, prepare_cache

    info = prepare_cache(root, out, size, parse_classes(classes), fraction, val_fraction, seed, workers, progress=True)
    click.echo(info.headline())


# ---- the last step: retrain and classify -------------------------------------------------------------------


@cli.command()
@storage_option
@click.option("--study", "study_name", required=True, help="Study name.")
@click.option("--trial", "trial_number", type=click.IntRange(min=0), help="Trial to retrain (default: the best).")
@click.option("--epochs", type=click.IntRange(min=1), help="Epochs (default: the study's train.max_epochs).")
@click.option("--device", callback=_check_device, help="auto, cpu, cuda or cuda:N.")
@click.option("--data-dir", type=click.Path(file_okay=False), help="Folder holding the dataset files.")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="Model file to write.")
@weights_options[0]
@weights_options[1]
@pass_context
def retrain(obj: Context, study_name, trial_number, epochs, device, data_dir, output, weights_dir, offline) -> None:
    """Retrain a trial's configuration on train+val, test it once, and write a model file."""
    from hpsearch.deploy.retrain import retrain as retrain_trial
    from hpsearch.search.study import open_existing

    retrain_trial(open_existing(obj.storage_url, study_name), output, trial_number, epochs, device, data_dir,
                  weights_dir=weights_dir, offline=offline)


@cli.command()
@click.option("--model", "model_file", required=True, type=click.Path(dir_okay=False),
              help="A model file written by `retrain`, or its ONNX export (NAME.onnx, run by onnxruntime).")
@click.argument("inputs", nargs=-1, required=True, metavar="IMAGE_OR_DIR...")
@click.option("--top-k", type=click.IntRange(min=1), default=5, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option("--device", callback=_check_device, default="cpu", show_default=True)
def predict(model_file, inputs, top_k, as_json, device) -> None:
    """Classify images (files or folders) with a model file written by `retrain` or its ONNX export."""
    from hpsearch.deploy.predict import format_predictions
    from hpsearch.deploy.predict import predict as classify
    from hpsearch.training.device import resolve_device

    preds, skipped = classify(model_file, list(inputs), top_k, str(resolve_device(device)))
    click.echo(format_predictions(preds, skipped, as_json))


@cli.command("export-model")
@click.option("--model", "model_file", required=True, type=click.Path(dir_okay=False),
              help="A model file written by `retrain`.")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
              help="ONNX model to write (NAME.onnx).")
@click.option("--images", multiple=True, metavar="IMAGE_OR_DIR",
              help="Images to check the export on (repeatable; default: the embedded sample's test images).")
def export_model(model_file, output, images) -> None:
    """Write a model file as an ONNX model (uint8 NCHW input, dynamic batch, preprocessing in its metadata),
    checked with onnxruntime against PyTorch."""
    from hpsearch.deploy.onnx import export_onnx

    export_onnx(model_file, output, list(images) or None)


# ---- the entry point ---------------------------------------------------------------------------------------


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
        print(f"hpsearch: error: {type(e).__name__}: {mask_secrets(first_line(e), None)}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
