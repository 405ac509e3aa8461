"""ImageFolder training throughput: a 64 px cache through hpsearch's loop versus JPEG files through a DataLoader.

    python benchmarks/imagefolder_cache.py [--quick] [--images 10000] [--repeats 3] [--folder DIR]

A JPEG folder of ``--images`` generated images (10 classes, 80-112 px sides, quality 90) is written to a
temp dir, or to ``--folder`` (reused if it already has ``train/``). Then:

(0) prepare: ``hpsearch.data.cache.prepare_cache`` decodes every file once into a 64 px cache (timed apart);
(a) cache: the cached arrays as a ``Dataset`` → ``DeviceData(channels_last=True)`` → ``hpsearch.training.loop.fit``
    for one epoch with ``aug_strength = 0`` (no augmentation), reading ``FitResult.images_per_s``;
(b) folder: ``torchvision.datasets.ImageFolder`` with RandomResizedCrop(64), RandomHorizontalFlip, ToTensor,
    Normalize through a ``DataLoader`` (the best of 1 and 2 workers is kept, so the baseline is not
    handicapped), one epoch over the same number of images, the same model, batch size and SGD.

Both arms train ``create_model("resnet", 10, 3, 64, depth=8, width=16)``. Images/s count training steps only
(no evaluation) and are medians over ``--repeats`` alternating runs. The break-even line says after how many
epochs the one-off preparation has paid for itself.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import median, write_result  # noqa: E402

from hpsearch.data.base import Dataset  # noqa: E402
from hpsearch.data.cache import load_cache, prepare_cache  # noqa: E402
from hpsearch.data.loader import DeviceData  # noqa: E402
from hpsearch.models import create_model  # noqa: E402
from hpsearch.training.loop import TrainConfig, fit, make_optimizer  # noqa: E402

SIZE = 64  # px, cache and crop side
CLASSES = 10
MODELS = {"resnet": ("resnet", {"depth": 8, "width": 16}), "lenet": ("lenet", {"width": 1})}
MODEL = MODELS["resnet"]  # set from --model in main()


# ---- the JPEG folder ---------------------------------------------------------------------------------------


JPEG_SIDE = (80, 113)  # px range per side; --imagenet-size uses ImageNet's typical 300-500 px


def synth_image(rng: np.random.Generator, label: int) -> np.ndarray:
    """(H, W, 3) uint8, sides in JPEG_SIDE: a gradient background and a class-shaped, class-coloured object."""
    h, w = (int(v) for v in rng.integers(*JPEG_SIDE, 2))
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    yy, xx = yy / h, xx / w  # [0, 1)
    angle = rng.uniform(0, 2 * np.pi)
    ramp = np.cos(angle) * xx + np.sin(angle) * yy  # background gradient in a random direction
    bg = rng.uniform(40, 200, 3)
    img = bg + 60 * (ramp[..., None] - 0.5) * rng.uniform(0.5, 1.5, 3)
    hue = np.array([np.cos(2 * np.pi * label / CLASSES + s) for s in (0, 2.1, 4.2)])  # one colour per class
    colour = 128 + 100 * hue + rng.normal(0, 20, 3)
    cy, cx, r = rng.uniform(0.3, 0.7), rng.uniform(0.3, 0.7), rng.uniform(0.15, 0.3)
    dy, dx = yy - cy, xx - cx
    shape = label % 5  # five shapes, each in two colours
    if shape == 0:
        mask = dy**2 + dx**2 < r**2
    elif shape == 1:
        mask = (abs(dy) < r) & (abs(dx) < r)
    elif shape == 2:
        mask = (dy > -r) & (abs(dx) < (dy + r) / 2)
    elif shape == 3:
        mask = np.sin(yy * rng.uniform(15, 30)) > 0.3
    else:
        mask = np.sin(xx * rng.uniform(15, 30)) > 0.3
    img[mask] = colour
    img += rng.normal(0, 8, img.shape)  # sensor-like noise
    return img.clip(0, 255).astype(np.uint8)


def make_folder(root: Path, n_images: int, seed: int = 0) -> None:
    from PIL import Image

    rng = np.random.default_rng(seed)
    for i in range(n_images):
        label = i % CLASSES
        d = root / "train" / f"class_{label:02d}"
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(synth_image(rng, label)).save(d / f"{i:06d}.jpg", quality=90)


# ---- the two arms ------------------------------------------------------------------------------------------


def cache_dataset(path: Path) -> Dataset:
    c = load_cache(path)
    as_tensor = lambda a: torch.from_numpy(np.array(a))  # noqa: E731 (a writable copy in memory)
    return Dataset(as_tensor(c["train_images"]), as_tensor(c["train_labels"]), as_tensor(c["val_images"][:256]),
                   as_tensor(c["val_labels"][:256]), c["classes"], True, f"cache {path}")


def cache_arm(ds: Dataset, cfg: TrainConfig, device: torch.device) -> float:
    torch.manual_seed(0)
    model = create_model(MODEL[0], CLASSES, 3, SIZE, **MODEL[1]).to(device, memory_format=torch.channels_last)
    data = DeviceData(ds, device, channels_last=True)
    return fit(model, data, cfg).images_per_s


def folder_arm(train_dir: Path, n_train: int, cfg: TrainConfig, workers: int, device: torch.device) -> float:
    from torchvision import datasets, transforms

    tf = transforms.Compose([
        transforms.RandomResizedCrop(SIZE),
        transforms.RandomHorizontalFlip(),
        transforms.ToTensor(),
        transforms.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    ])
    folder = datasets.ImageFolder(str(train_dir), transform=tf)
    pick = np.random.default_rng(0).permutation(len(folder))[:n_train].tolist()  # as many images as the cache
    loader = torch.utils.data.DataLoader(torch.utils.data.Subset(folder, pick), batch_size=cfg.batch_size,
                                         shuffle=True, num_workers=workers, pin_memory=device.type == "cuda")
    torch.manual_seed(0)
    model = create_model(MODEL[0], CLASSES, 3, SIZE, **MODEL[1]).to(device)
    opt = make_optimizer(model, cfg)
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    seen = 0
    t0 = time.perf_counter()
    for x, y in loader:
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        loss = loss_fn(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        seen += x.shape[0]
    if device.type == "cuda":
        torch.cuda.synchronize()
    return seen / (time.perf_counter() - t0)


# ---- main -------------------------------------------------------------------------------------------------


def main() -> None:
    global MODEL, JPEG_SIDE
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="200 images, one repeat, one worker count: a smoke run")
    ap.add_argument("--images", type=int, default=10000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--folder", type=Path, help="the JPEG folder: reused if it has train/, else generated there")
    ap.add_argument("--cache-workers", type=int, default=min(8, os.cpu_count() or 1),
                    help="decoding processes for prepare_cache")
    ap.add_argument("--device", default="cpu", help="training device for both arms (cpu, cuda)")
    ap.add_argument("--imagenet-size", action="store_true",
                    help="generate 300-500 px JPEGs (ImageNet's typical size) instead of 80-112 px ones")
    ap.add_argument("--model", default="resnet", choices=sorted(MODELS),
                    help="resnet (depth 8, width 16: conv-bound on a CPU) or lenet (loader-bound)")
    args = ap.parse_args()
    MODEL = MODELS[args.model]
    if args.imagenet_size:
        JPEG_SIDE = (300, 501)
    n_images, repeats = (200, 1) if args.quick else (args.images, args.repeats)
    device = torch.device(args.device)
    cfg = TrainConfig(lr=0.05, batch_size=args.batch_size, weight_decay=5e-4, optimizer="sgd", label_smoothing=0.0,
                      aug_strength=0.0, max_epochs=1, eval_every=1.0, warmup=0.0)
    with tempfile.TemporaryDirectory() as tmp:
        root = args.folder or Path(tmp) / "jpegs"
        t0 = time.perf_counter()
        if not (root / "train").is_dir():
            make_folder(root, n_images)
            print(f"generated {n_images:,} JPEGs in {root} in {time.perf_counter() - t0:.1f} s", flush=True)
        import torchvision.io  # noqa: F401 (seconds to import: kept out of the prepare time)
        import torchvision.transforms.v2.functional  # noqa: F401

        info = prepare_cache(root, Path(tmp) / "cache", size=SIZE, workers=args.cache_workers, progress=False)
        n_files = info.n_train + info.n_val + info.skipped
        print(f"prepare_cache: {n_files:,} files -> {SIZE} px cache in {info.seconds:.2f} s "
              f"({n_files / info.seconds:,.0f} img/s, {args.cache_workers} workers)", flush=True)
        ds = cache_dataset(info.path)
        workers = [1] if args.quick else [1, 2]
        cache_runs, folder_runs, best_workers = [], [], []
        for _ in range(repeats):  # alternate the arms so that drifts in machine load hit both
            cache_runs.append(cache_arm(ds, cfg, device))
            per_w = {w: folder_arm(root / "train", info.n_train, cfg, w, device) for w in workers}
            best = max(per_w, key=per_w.get)
            folder_runs.append(per_w[best])
            best_workers.append(best)
            by_w = "  ".join(f"{w} worker{'s' if w > 1 else ''} {v:,.0f}" for w, v in per_w.items())
            print(f"  run: cache {cache_runs[-1]:,.0f} img/s   folder: {by_w} img/s", flush=True)
    hp, tb = median(cache_runs), median(folder_runs)
    epoch_saving_s = info.n_train / tb - info.n_train / hp  # seconds per epoch saved by the cache
    break_even = info.seconds / epoch_saving_s if epoch_saving_s > 0 else float("inf")
    print(f"\n{'arm':34s} {'img/s':>9s}")
    print(f"{'(a) 64 px cache + hpsearch fit':34s} {hp:9,.0f}")
    print(f"{'(b) JPEG folder + DataLoader':34s} {tb:9,.0f}   (best of {workers} workers)")
    payback = f"paid back after {break_even:.2f} epochs" if epoch_saving_s > 0 else "never paid back here"
    print(f"ratio (a)/(b): {hp / tb:.2f}x   prepare: {info.seconds:.1f} s once, {payback}   [{info.n_train:,} "
          f"train images, batch {args.batch_size}, {device}, median of {repeats}]")
    path = write_result("imagefolder_cache", {
        "quick": args.quick, "images": n_files, "train_images": info.n_train, "size": SIZE,
        "model": {"name": MODEL[0], **MODEL[1]}, "jpeg_side_px": list(JPEG_SIDE), "batch_size": args.batch_size,
        "device": str(device),
        "repeats": repeats, "prepare_s": info.seconds, "prepare_workers": args.cache_workers,
        "cache_img_s": hp, "folder_img_s": tb, "ratio": hp / tb, "break_even_epochs": break_even if epoch_saving_s > 0 else None,
        "cache_runs": cache_runs, "folder_runs": folder_runs, "folder_best_workers": best_workers,
    })
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
