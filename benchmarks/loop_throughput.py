"""Training-loop throughput: hpsearch's device-resident path versus the textbook DataLoader loop.

    python benchmarks/loop_throughput.py --dataset fashion-mnist,synthetic-cifar [--data-dir DIR] [--quick]
                                         [--models lenet,resnet] [--device cpu|cuda] [--repeats 3]
                                         [--images 20000] [--batch-size 128] [--workers 1,2]

``--dataset`` names the data, and a named dataset that is absent stops the run with one line (exit 1):
nothing is swapped in. ``fashion-mnist`` is found by hpsearch's own lookup (``--data-dir``, ``$HPSEARCH_DATA``,
Debian's ``/usr/share/datasets/fashion-mnist``, an earlier download in ``~/.cache/hpsearch``) but never
downloaded; with ``--data-dir`` only that folder counts. ``fashion-mnist-sample`` is the embedded sample
(4,500 real images, 4,244 for training after the 256-image validation split); ``synthetic-cifar`` is
generated 3×32×32 data (``hpsearch.data.synthetic``, seed 0).

Both arms train the same model on the same images with the same batch size, optimizer, precision, memory
format (channels-last model and batches) and augmentation family:

(a) textbook: a torchvision dataset returning PIL images — ``datasets.FashionMNIST`` over IDX files holding
    the very images the hpsearch arm trains on; for ``synthetic-cifar`` a dataset built exactly like
    torchvision's ``CIFAR10`` (HWC uint8 array → ``PIL.Image.fromarray``) — with PIL transforms
    (RandomHorizontalFlip, RandomCrop(padding=4), ToTensor, Normalize) through a ``DataLoader`` with worker
    processes (best of several worker counts, pinned memory on CUDA), batches moved to the device;
(b) hpsearch: ``hpsearch.training.loop.fit`` with ``aug_strength = 1`` (flip, ±12.5% translation, plus rotation,
    zoom and random erasing, i.e. more augmentation work than the textbook arm), data resident on the device.

Images/s count training steps only (no evaluation) and are medians over ``--repeats`` alternating runs,
after an untimed warm-up of each arm (4 batches). Beside them, CPU ms per image: the CPU time of the timed
window, the DataLoader workers' included (for (a) the workers' whole life, start-up too; for (b) the final
evaluation of 256 images too). On a machine shared with other jobs wall-clock rates depend on the others'
load (and favour the arm with more processes, which the scheduler serves more often); CPU time per image
depends on it much less.
Start-up is outside the timed window and reported beside it: for (a) creating the DataLoader's iterator
(forking its workers) until the first batch is in; for (b) moving the data to the device. Both windows then
include the first training step. (a)'s workers keep preparing batches while the first one is handed over,
so its window starts with up to one batch per worker ready: a head start for the textbook arm.
"""

from __future__ import annotations

import itertools
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _data  # noqa: E402
from _common import OneLineParser, csv_list, median, positive_int, write_result  # noqa: E402
from _data import Absent, Data  # noqa: E402

from hpsearch.data.base import Dataset  # noqa: E402
from hpsearch.data.idx import write_idx  # noqa: E402
from hpsearch.data.loader import DeviceData  # noqa: E402
from hpsearch.models import create_model  # noqa: E402
from hpsearch.training.device import configure, resolve_device, resolve_precision  # noqa: E402
from hpsearch.training.loop import TrainConfig, autocast, fit, make_optimizer  # noqa: E402

DATASETS = ("fashion-mnist", "fashion-mnist-sample", "synthetic-cifar")
MODELS = {"lenet": {}, "vgg": {"stages": 3, "width": 16}, "resnet": {"depth": 8, "width": 16},
          "airbench": {}}
WARMUP_BATCHES = 4  # per arm, untimed, before the repeats of each row


def load_data(name: str, n_images: int, data_dir: str | None) -> Data:
    return _data.load_data(name, n_images, data_dir, "--dataset fashion-mnist-sample for the embedded 4,500-image "
                           "sample")


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


def textbook_dataset(data: Data, tmp: Path):
    """The textbook arm's dataset over the same images as the hpsearch arm's ``data.ds.train_x``."""
    from torchvision import datasets, transforms

    ds = data.ds
    mean, std = (t.tolist() for t in ds.channel_stats())  # [0, 1] units, as Normalize after ToTensor wants
    tf = transforms.Compose([
        transforms.RandomHorizontalFlip(),
        transforms.RandomCrop(ds.image_size, padding=4),
        transforms.ToTensor(),
        transforms.Normalize(mean, std),
    ])
    if data.name == "synthetic-cifar":
        return ArrayImages(ds.train_x, ds.train_y, tf)
    raw = tmp / "FashionMNIST" / "raw"  # torchvision's layout; it wants the test files to exist as well
    raw.mkdir(parents=True)
    for prefix in ("train", "t10k"):
        write_idx(raw / f"{prefix}-images-idx3-ubyte", ds.train_x[:, 0].numpy())
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", ds.train_y.numpy().astype("uint8"))
    return datasets.FashionMNIST(str(tmp), train=True, transform=tf, download=False)


def textbook(model: nn.Module, dataset, cfg: TrainConfig, device: torch.device, workers: int) -> dict:
    """One epoch of the DataLoader loop: img/s from the first batch on, and the workers' start-up (s)."""
    loader = torch.utils.data.DataLoader(dataset, batch_size=cfg.batch_size, shuffle=True, num_workers=workers,
                                         drop_last=True, pin_memory=device.type == "cuda")
    model = model.to(device, memory_format=torch.channels_last)
    opt = make_optimizer(model, cfg)
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    t_start = time.perf_counter()
    batches = iter(loader)  # starts the worker processes
    first = next(batches)
    startup = time.perf_counter() - t_start
    seen = 0
    t0, cpu0 = time.perf_counter(), time.process_time()
    for x, y in itertools.chain([first], batches):
        x = x.to(device, memory_format=torch.channels_last, non_blocking=True)  # (B, C, H, W) float
        y = y.to(device, non_blocking=True)
        with autocast(device, cfg.precision):
            loss = loss_fn(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        seen += x.shape[0]
    if device.type == "cuda":
        torch.cuda.synchronize()
    wall, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    children = _children_cpu_s()
    del batches  # joins the workers, so that their CPU time is counted as this process's children's
    return {"workers": workers, "img_s": seen / wall, "startup_s": startup,
            "cpu_ms_per_img": 1000 * (cpu + _children_cpu_s() - children) / seen}


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)  # terminated, reaped children: the workers
    return usage.ru_utime + usage.ru_stime


def hpsearch_path(model: nn.Module, data: Data, cfg: TrainConfig, device: torch.device) -> dict:
    """One epoch of ``fit``: its own img/s (training steps only), and the time to put the data on the device."""
    t_start = time.perf_counter()
    resident = DeviceData(data.ds, device, channels_last=True)
    if device.type == "cuda":
        torch.cuda.synchronize()
    startup = time.perf_counter() - t_start
    model = model.to(device, memory_format=torch.channels_last)
    cpu0 = time.process_time()
    result = fit(model, resident, cfg)
    images = resident.n_train * cfg.max_epochs
    return {"img_s": result.images_per_s, "startup_s": startup,
            "cpu_ms_per_img": 1000 * (time.process_time() - cpu0) / images}


def measure(data: Data, arch: str, dataset, cfg: TrainConfig, device: torch.device, workers: list[int],
            repeats: int) -> dict:
    def make() -> nn.Module:
        torch.manual_seed(0)
        return create_model(arch, 10, data.ds.in_channels, data.ds.image_size, **MODELS[arch])

    load_before = os.getloadavg()[0]  # the machine is shared: say how busy it was
    # untimed warm-up of both arms (kernel selection, oneDNN/cuDNN plans, allocator), so each repeat is warm
    few = Data(data.name, Dataset(data.ds.train_x[:WARMUP_BATCHES * cfg.batch_size],
                                  data.ds.train_y[:WARMUP_BATCHES * cfg.batch_size], data.ds.val_x, data.ds.val_y,
                                  data.ds.classes, data.ds.hflip, data.ds.source), data.path)
    textbook(make(), torch.utils.data.Subset(dataset, range(WARMUP_BATCHES * cfg.batch_size)), cfg, device,
             workers[0])
    hpsearch_path(make(), few, cfg, device)
    tb_runs, hp_runs = [], []
    for _ in range(repeats):  # alternating, so that a noisy spell on the machine hits both arms
        tb_runs.append([textbook(make(), dataset, cfg, device, w) for w in workers])
        hp_runs.append(hpsearch_path(make(), data, cfg, device))
    best = [max(runs, key=lambda r: r["img_s"]) for runs in tb_runs]  # the best worker count of each repeat
    tb, hp = median([r["img_s"] for r in best]), median([r["img_s"] for r in hp_runs])
    return {"dataset": data.name, "images": data.ds.train_x.shape[0], "image_shape": list(data.ds.train_x.shape[1:]),
            "source_path": data.path, "source": data.ds.source, "model": arch, "params": MODELS[arch],
            "batch_size": cfg.batch_size, "repeats": repeats, "device": str(device), "precision": cfg.precision,
            "textbook_workers": workers, "textbook_img_s": tb, "hpsearch_img_s": hp, "ratio": hp / tb,
            "textbook_startup_s": median([r["startup_s"] for r in best]),
            "hpsearch_startup_s": median([r["startup_s"] for r in hp_runs]),
            "textbook_cpu_ms_per_img": median([r["cpu_ms_per_img"] for r in best]),
            "hpsearch_cpu_ms_per_img": median([r["cpu_ms_per_img"] for r in hp_runs]),
            "loadavg_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)],
            "textbook_runs": tb_runs, "hpsearch_runs": hp_runs}


def main() -> None:
    ap = OneLineParser("loop_throughput", description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", type=csv_list(str, DATASETS), default=None,
                    help=f"comma-separated, of {', '.join(DATASETS)} (default fashion-mnist,synthetic-cifar)")
    ap.add_argument("--data-dir", default=None, help="the only folder to take fashion-mnist from")
    ap.add_argument("--quick", action="store_true", help="few images, one repeat: a smoke run")
    ap.add_argument("--models", type=csv_list(str, tuple(MODELS)), default=["lenet", "resnet"])
    ap.add_argument("--device", default="cpu", help="cpu | cuda | auto")
    ap.add_argument("--batch-size", type=positive_int, default=128)
    ap.add_argument("--images", type=positive_int, default=20000)
    ap.add_argument("--repeats", type=positive_int, default=3)
    ap.add_argument("--workers", type=csv_list(int), default=None,
                    help="DataLoader worker counts to try (default: 1,2 on CPU; 4,8 up to the core count on CUDA)")
    args = ap.parse_args()
    datasets = args.dataset or ["fashion-mnist", "synthetic-cifar"]
    n_images, repeats = (1024, 1) if args.quick else (args.images, args.repeats)
    if n_images < 2 * args.batch_size:
        ap.error(f"`--images` is {n_images}, but must be ≥ 2 × --batch-size ({2 * args.batch_size})")
    try:  # every named dataset is looked up before anything is measured
        data = [load_data(name, n_images, args.data_dir) for name in datasets]
    except Absent as e:
        sys.exit(f"loop_throughput: {e}")
    device = resolve_device(args.device)
    configure(device)
    precision = resolve_precision("auto", device)
    if args.workers:
        workers = args.workers
    elif args.quick:
        workers = [1]
    elif device.type == "cuda":
        workers = sorted({min(4, os.cpu_count() or 1), min(8, os.cpu_count() or 1)})
    else:
        workers = [1, 2]
    cfg = TrainConfig(lr=0.02, batch_size=args.batch_size, weight_decay=5e-4, optimizer="sgd", label_smoothing=0.0,
                      aug_strength=1.0, max_epochs=1, eval_every=1.0, warmup=0.0, precision=precision)
    rows = []
    for d in data:
        print(f"data: {d.label}: {d.ds.source}", flush=True)
        with tempfile.TemporaryDirectory() as tmp:
            dataset = textbook_dataset(d, Path(tmp))
            for arch in args.models:
                row = measure(d, arch, dataset, cfg, device, workers, repeats)
                rows.append(row)
                print(f"{d.label}  {arch:7s} textbook {row['textbook_img_s']:8,.0f} img/s (start-up "
                      f"{row['textbook_startup_s']:.2f} s)  hpsearch {row['hpsearch_img_s']:8,.0f} img/s "
                      f"(start-up {row['hpsearch_startup_s']:.2f} s)  ratio {row['ratio']:.2f}x  CPU ms/img "
                      f"{row['textbook_cpu_ms_per_img']:.2f} vs {row['hpsearch_cpu_ms_per_img']:.2f}  (load "
                      f"{row['loadavg_1min'][0]:.1f}→{row['loadavg_1min'][1]:.1f})", flush=True)
    peak = torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else None
    name = "loop_throughput" if device.type == "cpu" else f"loop_throughput_{device.type}"
    path = write_result(name, {"quick": args.quick, "device": str(device), "peak_gpu_mem_mib": peak,
                               "command": " ".join(["python", "benchmarks/loop_throughput.py", *sys.argv[1:]]),
                               "timing": "training steps only, after 4 untimed warm-up batches per arm and row; start-up (DataLoader iterator to first batch / "
                                         "data to device) outside the window, reported as *_startup_s",
                               "rows": rows})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
