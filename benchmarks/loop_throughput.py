"""Training-loop throughput: hpsearch's device-resident path versus the textbook DataLoader loop.

    python benchmarks/loop_throughput.py [--quick] [--models lenet,vgg] [--repeats 3] [--images 20000]

Both arms train the same model with the same batch size, optimizer and augmentation family on
Fashion-MNIST (Debian's files if installed, else the embedded sample):

(a) textbook: ``torchvision.datasets.FashionMNIST`` with PIL transforms (RandomHorizontalFlip,
    RandomCrop(28, padding=4), ToTensor, Normalize) through a ``DataLoader`` with worker processes
    (the best of 1 and 2 workers is kept, so the baseline is not handicapped);
(b) hpsearch: ``hpsearch.train.fit`` with ``aug_strength = 1`` (flip, ±3.5 px translation, plus rotation,
    zoom and random erasing, i.e. more augmentation work than the textbook arm).

Images/s count training steps only (no evaluation) and are medians over ``--repeats`` alternating runs.
"""

from __future__ import annotations

import argparse
import gzip
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
from hpsearch.models import create_model  # noqa: E402
from hpsearch.spec import DataSpec  # noqa: E402
from hpsearch.train import TrainConfig, fit, make_optimizer  # noqa: E402

DEBIAN = Path("/usr/share/datasets/fashion-mnist")
MODELS = {"lenet": {}, "vgg": {"stages": 3, "width": 16}, "resnet": {"depth": 8, "width": 16}}


def torchvision_root(ds: Dataset, tmp: Path) -> Path:
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


def textbook(model: nn.Module, root: Path, cfg: TrainConfig, n_images: int, workers: int) -> float:
    from torchvision import datasets, transforms

    tf = transforms.Compose([
        transforms.RandomHorizontalFlip(),
        transforms.RandomCrop(28, padding=4),
        transforms.ToTensor(),
        transforms.Normalize((0.2860,), (0.3530,)),
    ])
    train = datasets.FashionMNIST(str(root), train=True, transform=tf, download=False)
    subset = torch.utils.data.Subset(train, range(min(n_images, len(train))))
    loader = torch.utils.data.DataLoader(subset, batch_size=cfg.batch_size, shuffle=True, num_workers=workers,
                                         drop_last=True, persistent_workers=False)
    opt = make_optimizer(model, cfg)
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    seen = 0
    t0 = time.perf_counter()
    for x, y in loader:
        loss = loss_fn(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        seen += x.shape[0]
    return seen / (time.perf_counter() - t0)


def hpsearch_path(model: nn.Module, ds: Dataset, cfg: TrainConfig, n_images: int) -> float:
    sub = Dataset(ds.train_x[:n_images], ds.train_y[:n_images], ds.val_x[:256], ds.val_y[:256], ds.classes,
                  True, ds.source)
    data = DeviceData(sub, torch.device("cpu"), channels_last=True)
    model = model.to(memory_format=torch.channels_last)
    return fit(model, data, cfg).images_per_s


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="few images, one repeat: a smoke run")
    ap.add_argument("--models", default="lenet,vgg")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--images", type=int, default=20000)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    n_images, repeats = (1024, 1) if args.quick else (args.images, args.repeats)
    name = "fashion-mnist" if DEBIAN.is_dir() else "fashion-mnist-sample"
    ds = load_dataset(DataSpec(name, val_size=1000), seed=0)
    cfg = TrainConfig(lr=0.02, batch_size=args.batch_size, weight_decay=5e-4, optimizer="sgd", label_smoothing=0.0,
                      aug_strength=1.0, max_epochs=1, eval_every=1.0, warmup=0.0)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = torchvision_root(ds, Path(tmp))
        for arch in args.models.split(","):
            tb, hp = [], []
            workers = [1, 2] if not args.quick else [1]
            for _ in range(repeats):
                torch.manual_seed(0)
                tb.append(max(textbook(create_model(arch, 10, 1, 28, **MODELS[arch]), root, cfg, n_images, w)
                              for w in workers))
                torch.manual_seed(0)
                hp.append(hpsearch_path(create_model(arch, 10, 1, 28, **MODELS[arch]), ds, cfg, n_images))
            row = {"model": arch, "params": MODELS[arch], "batch_size": args.batch_size, "images": n_images,
                   "repeats": repeats, "textbook_img_s": median(tb), "hpsearch_img_s": median(hp),
                   "ratio": median(hp) / median(tb), "textbook_runs": tb, "hpsearch_runs": hp}
            rows.append(row)
            print(f"{arch:8s} textbook {row['textbook_img_s']:8,.0f} img/s   hpsearch {row['hpsearch_img_s']:8,.0f} "
                  f"img/s   ratio {row['ratio']:.2f}x", flush=True)
    path = write_result("loop_throughput", {"dataset": name, "quick": args.quick, "rows": rows})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
