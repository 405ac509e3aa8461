"""Time-to-94%: the airbench-style network on CIFAR-10 through ``hpsearch.training.loop.fit`` (a GPU check).

    python benchmarks/gpu_airbench.py [--data-dir DIR] [--target 94] [--max-epochs 12] [--quick]

With CIFAR-10's python batches under DIR (``cifar-10-batches-py/``) it trains the configuration that
``studies/cifar10_resnet.toml`` enqueues (45k/5k split of the training set), evaluates every half epoch and
prints the training time until val Top-1 first reaches ``--target``. Without them it says so and measures
throughput only, on synthetic CIFAR-shaped data (50,000 images, 3x32x32): seconds per epoch and img/s.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_result  # noqa: E402

from hpsearch.data import load_dataset  # noqa: E402
from hpsearch.data.loader import DeviceData  # noqa: E402
from hpsearch.errors import HpsearchError  # noqa: E402
from hpsearch.models import create_model  # noqa: E402
from hpsearch.spec import DataSpec  # noqa: E402
from hpsearch.training.device import configure, resolve_device, resolve_precision  # noqa: E402
from hpsearch.training.loop import TrainConfig, fit  # noqa: E402


class ReachedTarget(Exception):
    pass


class Watch:
    """Records eval points; stops training once val Top-1 reaches the target."""

    def __init__(self, target: float | None):
        self.target, self.points, self.t0 = target, [], time.perf_counter()

    def on_eval(self, point) -> None:
        self.points.append({"epoch": point.epoch, "top1": point.top1, "elapsed_s": point.elapsed_s,
                            "images_per_s": point.images_per_s})
        print(f"  epoch {point.epoch:5.2f}  val top1 {point.top1:6.2f}%  {point.elapsed_s:6.1f} s", flush=True)
        if self.target is not None and point.top1 >= self.target:
            raise ReachedTarget


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--target", type=float, default=94.0)
    ap.add_argument("--max-epochs", type=int, default=12)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    device = resolve_device(args.device)
    configure(device)
    precision = resolve_precision("auto", device)
    real = None
    if args.data_dir:
        try:
            real = load_dataset(DataSpec("cifar10", val_size=5000), seed=0, data_dir=args.data_dir)
        except HpsearchError as e:
            print(f"CIFAR-10 not loaded ({e}); measuring throughput on synthetic data only")
    else:
        print("no --data-dir: CIFAR-10 time-to-94% skipped (needs cifar-10-batches-py/); throughput on synthetic data")
    n = 600 if args.quick else 50000
    ds = real or load_dataset(DataSpec("synthetic", val_size=5000 if not args.quick else 100, image_size=32,
                                       channels=3, num_classes=10, n_images=n), seed=0)
    epochs = args.max_epochs if real else (1 if args.quick else 3)
    cfg = TrainConfig(lr=0.2, batch_size=512, weight_decay=5e-4, optimizer="sgd", label_smoothing=0.2,
                      aug_strength=0.3, max_epochs=epochs, eval_every=0.5, precision=precision)
    data = DeviceData(ds, device, channels_last=True)
    torch.manual_seed(0)
    model = create_model("airbench", 10, 3, 32).to(device, memory_format=torch.channels_last)
    watch = Watch(args.target if real else None)
    reached = False
    t0 = time.perf_counter()
    try:
        result = fit(model, data, cfg, [watch])
        ips = result.images_per_s
    except ReachedTarget:
        reached = True
        ips = watch.points[-1]["images_per_s"]
    wall = time.perf_counter() - t0
    train_s = ds.train_x.shape[0] * watch.points[-1]["epoch"] / ips
    peak = torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else None
    out = {"device": str(device), "precision": precision, "dataset": ds.source, "real_cifar10": real is not None,
           "target": args.target, "reached": reached, "epochs": watch.points[-1]["epoch"], "images_per_s": ips,
           "train_s": train_s, "wall_s": wall, "s_per_epoch": ds.train_x.shape[0] / ips, "peak_gpu_mem_mib": peak,
           "points": watch.points, "config": cfg.__dict__}
    if real:
        verdict = f"reached {args.target}% after {train_s:.1f} s of training" if reached else \
            f"did not reach {args.target}% in {epochs} epochs (best {max(p['top1'] for p in watch.points):.2f}%)"
        print(f"CIFAR-10 airbench: {verdict}")
    print(f"airbench {ds.train_x.shape[0]} images: {ips:,.0f} img/s, {out['s_per_epoch']:.2f} s/epoch "
          f"(training only), peak GPU memory {peak or 0:.0f} MiB")
    print(f"wrote {write_result('gpu_airbench', out)}")


if __name__ == "__main__":
    main()
