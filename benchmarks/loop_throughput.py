"""Training-loop throughput: hpsearch's device-resident path versus the textbook DataLoader loop.

    python benchmarks/loop_throughput.py [--quick] [--models lenet,resnet] [--shapes fmnist,cifar]
                                         [--device cpu|cuda] [--repeats 3] [--images 20000]

Both arms train the same model with the same batch size, optimizer, precision and augmentation family:

(a) textbook: a torchvision dataset returning PIL images — ``datasets.FashionMNIST`` on Debian's files
    (or the embedded sample) for ``fmnist``; for ``cifar``, a dataset built exactly like torchvision's
    ``CIFAR10`` (HWC uint8 array → ``PIL.Image.fromarray``) over synthetic 3×32×32 images — with PIL
    transforms (RandomHorizontalFlip, RandomCrop(padding=4), ToTensor, Normalize) through a ``DataLoader``
    with worker processes (best of several worker counts, pinned memory on CUDA), batches moved to the device;
(b) hpsearch: ``hpsearch.train.fit`` with ``aug_strength = 1`` (flip, ±12.5% translation, plus rotation,
    zoom and random erasing, i.e. more augmentation work than the textbook arm), data resident on the device.

Images/s count training steps only (no evaluation) and are medians over ``--repeats`` alternating runs.
"""

from __future__ import annotations

import argparse
import gzip
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import median, write_result  # noqa: E402

from hpsearch.data import load_dataset  # noqa: E402
from hpsearch.data.base import Dataset  # noqa: E402
from hpsearch.data.loader import DeviceData  # noqa: E402
from hpsearch.device import configure, resolve_device, resolve_precision  # noqa: E402
from hpsearch.models import create_model  # noqa: E402
from hpsearch.spec import DataSpec  # noqa: E402
from hpsearch.train import TrainConfig, autocast, fit, make_optimizer  # noqa: E402

DEBIAN = Path("/usr/share/datasets/fashion-mnist")
MODELS = {"lenet": {}, "vgg": {"stages": 3, "width": 16}, "resnet": {"depth": 8, "width": 16},
          "airbench": {}}


class ArrayImages(torch.utils.data.Dataset):
    """What torchvision's CIFAR10 does per item: an HWC uint8 array row → PIL image → transforms."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, transform):
        self.x = x.permute(0, 2, 3, 1).contiguous().numpy()  # (N, H, W, C) uint8
        self.y = y.tolist()
        self.transform = transform

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int):
        from PIL import Image

        img = self.x[i]
        img = Image.fromarray(img[:, :, 0] if img.shape[2] == 1 else img)
        return self.transform(img), self.y[i]


def fashion_root(ds: Dataset, tmp: Path) -> Path:
    """Lays out the training images as torchvision's FashionMNIST expects them (raw IDX files)."""
    raw = tmp / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    if DEBIAN.is_dir():
        for f in DEBIAN.glob("*.gz"):
            with gzip.open(f) as src, open(raw / f.stem, "wb") as dst:
                shutil.copyfileobj(src, dst)
    else:
        from hpsearch.data.idx import write_idx

        x = torch.cat([ds.train_x, ds.val_x])[:, 0].numpy()
        y = torch.cat([ds.train_y, ds.val_y]).numpy()
        for prefix in ("train", "t10k"):
            write_idx(raw / f"{prefix}-images-idx3-ubyte", x)
            write_idx(raw / f"{prefix}-labels-idx1-ubyte", y)
    return tmp


def textbook_dataset(shape: str, ds: Dataset, tmp: Path, n_images: int):
    from torchvision import datasets, transforms

    mean, std = (t.tolist() for t in ds.channel_stats())  # [0, 1] units, as Normalize after ToTensor wants
    tf = transforms.Compose([
        transforms.RandomHorizontalFlip(),
        transforms.RandomCrop(ds.image_size, padding=4),
        transforms.ToTensor(),
        transforms.Normalize(mean, std),
    ])
    if shape == "fmnist":
        train = datasets.FashionMNIST(str(fashion_root(ds, tmp)), train=True, transform=tf, download=False)
    else:
        train = ArrayImages(ds.train_x, ds.train_y, tf)
    return torch.utils.data.Subset(train, range(min(n_images, len(train))))


def textbook(model: nn.Module, subset, cfg: TrainConfig, device: torch.device, workers: int) -> float:
    loader = torch.utils.data.DataLoader(subset, batch_size=cfg.batch_size, shuffle=True, num_workers=workers,
                                         drop_last=True, pin_memory=device.type == "cuda")
    model = model.to(device)
    opt = make_optimizer(model, cfg)
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    seen = 0
    t0 = time.perf_counter()
    for x, y in loader:
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with autocast(device, cfg.precision):
            loss = loss_fn(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        seen += x.shape[0]
    if device.type == "cuda":
        torch.cuda.synchronize()
    return seen / (time.perf_counter() - t0)


def hpsearch_path(model: nn.Module, ds: Dataset, cfg: TrainConfig, device: torch.device, n_images: int) -> float:
    sub = Dataset(ds.train_x[:n_images], ds.train_y[:n_images], ds.val_x[:256], ds.val_y[:256], ds.classes,
                  True, ds.source)
    data = DeviceData(sub, device, channels_last=True)
    model = model.to(device, memory_format=torch.channels_last)
    return fit(model, data, cfg).images_per_s


def load_shape(shape: str, n_images: int) -> Dataset:
    if shape == "fmnist":
        name = "fashion-mnist" if DEBIAN.is_dir() else "fashion-mnist-sample"
        return load_dataset(DataSpec(name, val_size=1000), seed=0)
    return load_dataset(DataSpec("synthetic", val_size=256, image_size=32, channels=3, num_classes=10,
                                 n_images=n_images + 256), seed=0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="few images, one repeat: a smoke run")
    ap.add_argument("--models", default="lenet,resnet")
    ap.add_argument("--shapes", default="fmnist,cifar", help="fmnist (1×28×28) and/or cifar (3×32×32)")
    ap.add_argument("--device", default="cpu", help="cpu | cuda | auto")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--images", type=int, default=20000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--workers", default=None, help="DataLoader worker counts to try (default: 1,2 on CPU; "
                                                    "4,8 up to the core count on CUDA)")
    args = ap.parse_args()
    n_images, repeats = (1024, 1) if args.quick else (args.images, args.repeats)
    device = resolve_device(args.device)
    configure(device)
    precision = resolve_precision("auto", device)
    if args.workers:
        workers = [int(w) for w in args.workers.split(",")]
    elif args.quick:
        workers = [1]
    elif device.type == "cuda":
        workers = sorted({min(4, os.cpu_count() or 1), min(8, os.cpu_count() or 1)})
    else:
        workers = [1, 2]
    cfg = TrainConfig(lr=0.02, batch_size=args.batch_size, weight_decay=5e-4, optimizer="sgd", label_smoothing=0.0,
                      aug_strength=1.0, max_epochs=1, eval_every=1.0, warmup=0.0, precision=precision)
    rows = []
    for shape in args.shapes.split(","):
        ds = load_shape(shape, n_images)
        with tempfile.TemporaryDirectory() as tmp:
            subset = textbook_dataset(shape, ds, Path(tmp), n_images)
            for arch in args.models.split(","):
                def make(arch=arch, ds=ds) -> nn.Module:
                    return create_model(arch, 10, ds.in_channels, ds.image_size, **MODELS[arch])

                tb, hp = [], []
                for _ in range(repeats):
                    torch.manual_seed(0)
                    tb.append(max(textbook(make(), subset, cfg, device, w) for w in workers))
                    torch.manual_seed(0)
                    hp.append(hpsearch_path(make(), ds, cfg, device, n_images))
                row = {"model": arch, "shape": shape, "params": MODELS[arch], "batch_size": args.batch_size,
                       "images": min(n_images, ds.train_x.shape[0]), "repeats": repeats, "device": str(device),
                       "precision": precision, "textbook_workers": workers, "dataset": ds.source,
                       "textbook_img_s": median(tb), "hpsearch_img_s": median(hp), "ratio": median(hp) / median(tb),
                       "textbook_runs": tb, "hpsearch_runs": hp}
                rows.append(row)
                print(f"{shape:7s} {arch:8s} textbook {row['textbook_img_s']:9,.0f} img/s   hpsearch "
                      f"{row['hpsearch_img_s']:9,.0f} img/s   ratio {row['ratio']:.2f}x", flush=True)
    peak = torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else None
    name = "loop_throughput" if device.type == "cpu" else f"loop_throughput_{device.type}"
    path = write_result(name, {"quick": args.quick, "device": str(device), "peak_gpu_mem_mib": peak, "rows": rows})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
