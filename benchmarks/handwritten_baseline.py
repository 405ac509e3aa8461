"""A hand-written Optuna search of the kind users write: arm (handwritten) of ``search_value.py``.

    python benchmarks/handwritten_baseline.py --data-root DIR --budget 720 --seed 0 --out trials.json

Plain Optuna (``TPESampler`` + ``MedianPruner`` with their defaults, one ``trial.report`` per epoch) over the
search space of ``studies/fashion_mnist.toml``, trained with the textbook loop: ``torchvision.datasets
.FashionMNIST`` (raw IDX files in ``DIR/FashionMNIST/raw``), PIL transforms, a ``DataLoader`` with 2 worker
processes, SGD (Nesterov, momentum 0.9) and ``OneCycleLR``. The architectures come from
``hpsearch.models.create_model`` so that both arms train identical networks. Validation holds the same
seeded 10,000 images out of the training set as hpsearch does (``hpsearch/data/base.py: split``); the test
set is never read. Each finished trial is appended to ``--out`` (a JSON file rewritten after every trial), so
the file is complete up to the moment the harness stops this process at the end of its budget.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import optuna
import torch
from torch import nn
from torch.utils.data import DataLoader, Subset
from torchvision import datasets, transforms

from hpsearch.models import create_model

MEAN, STD = (0.2860,), (0.3530,)  # Fashion-MNIST training-set pixel statistics


def suggest(trial: optuna.Trial) -> dict:
    """The search space of studies/fashion_mnist.toml, written out by hand."""
    arch = trial.suggest_categorical("arch", ["vgg", "resnet"])
    cfg = {
        "arch": arch,
        "lr": trial.suggest_float("lr", 0.02, 0.3, log=True),
        "batch_size": trial.suggest_categorical("batch_size", [128, 256]),
        "weight_decay": trial.suggest_float("weight_decay", 1e-5, 2e-3, log=True),
        "label_smoothing": trial.suggest_float("label_smoothing", 0.0, 0.15),
        "aug_strength": trial.suggest_float("aug_strength", 0.0, 0.15),
    }
    if arch == "vgg":
        cfg["model"] = {"stages": trial.suggest_categorical("vgg.stages", [2, 3]),
                        "width": trial.suggest_categorical("vgg.width", [16, 24])}
    else:
        cfg["model"] = {"depth": 8, "width": trial.suggest_categorical("resnet.width", [12, 16])}
    return cfg


def train_transform(aug_strength: float) -> transforms.Compose:
    """Flip with probability min(0.5, s) (as hpsearch) and a random crop padded by round(4·s) pixels."""
    ops: list = []
    if aug_strength > 0:
        ops.append(transforms.RandomHorizontalFlip(p=min(0.5, aug_strength)))
    if (pad := round(4 * aug_strength)) > 0:
        ops.append(transforms.RandomCrop(28, padding=pad))
    return transforms.Compose([*ops, transforms.ToTensor(), transforms.Normalize(MEAN, STD)])


def split_indices(n: int, val_size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    perm = np.random.default_rng(seed).permutation(n)  # the same permutation hpsearch draws
    return perm[val_size:], perm[:val_size]


@torch.no_grad()
def accuracy(model: nn.Module, loader: DataLoader, device: torch.device) -> float:
    model.eval()
    hits = total = 0
    for x, y in loader:
        x, y = x.to(device), y.to(device)
        hits += (model(x).argmax(1) == y).sum().item()
        total += y.numel()
    model.train()
    return 100.0 * hits / total


def train_trial(cfg: dict, root: str, train_idx: np.ndarray, val_loader: DataLoader, epochs: int, seed: int,
                workers: int, device: torch.device, on_eval, evals_per_epoch: int = 1) -> float:
    """Trains one configuration (``suggest``'s dict) with the textbook loop and returns its last validation
    Top-1; ``on_eval(k, top1)`` is called at eval point k = 0, 1, ... (``evals_per_epoch`` a epoch, evenly spaced
    in its batches, the last at the epoch's end) and may raise to stop the trial. The hand-written arm and Ray
    Tune's ``ray-user`` arm (``peers.py``) both train through here."""
    pin = device.type == "cuda"
    train_set = datasets.FashionMNIST(root, train=True, download=False, transform=train_transform(cfg["aug_strength"]))
    loader = DataLoader(Subset(train_set, train_idx), batch_size=cfg["batch_size"], shuffle=True,
                        num_workers=workers, drop_last=True, persistent_workers=workers > 0, pin_memory=pin)
    torch.manual_seed(seed)
    model = create_model(cfg["arch"], 10, 1, 28, **cfg["model"]).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=cfg["lr"], momentum=0.9, nesterov=True,
                          weight_decay=cfg["weight_decay"])
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg["lr"], epochs=epochs, steps_per_epoch=len(loader))
    loss_fn = nn.CrossEntropyLoss(label_smoothing=cfg["label_smoothing"])
    marks = {round(len(loader) * (k + 1) / evals_per_epoch) for k in range(evals_per_epoch)}
    acc, point = 0.0, 0
    for _ in range(epochs):
        for b, (x, y) in enumerate(loader, 1):
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            loss = loss_fn(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            if b in marks:
                acc = accuracy(model, val_loader, device)
                on_eval(point, acc)
                point += 1
    return acc


def val_loader(root: str, val_idx: np.ndarray, workers: int, device: torch.device) -> DataLoader:
    """The held-out validation images, normalised, in batches of 1,024."""
    val_set = datasets.FashionMNIST(root, train=True, download=False,
                                    transform=transforms.Compose([transforms.ToTensor(), transforms.Normalize(MEAN, STD)]))
    return DataLoader(Subset(val_set, val_idx), batch_size=1024, num_workers=workers,
                      persistent_workers=workers > 0, pin_memory=device.type == "cuda")


class Objective:
    def __init__(self, root: str, val_size: int, epochs: int, seed: int, workers: int, device: torch.device):
        self.root, self.epochs, self.seed, self.workers, self.device = root, epochs, seed, workers, device
        n = len(datasets.FashionMNIST(root, train=True, download=False))
        self.train_idx, val_idx = split_indices(n, val_size, seed)
        self.val_loader = val_loader(root, val_idx, workers, device)

    def __call__(self, trial: optuna.Trial) -> float:
        def on_eval(epoch: int, acc: float) -> None:
            trial.report(acc, epoch)
            if trial.should_prune():
                raise optuna.TrialPruned()

        return train_trial(suggest(trial), self.root, self.train_idx, self.val_loader, self.epochs,
                           self.seed + trial.number, self.workers, self.device, on_eval)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-root", required=True, help="folder holding FashionMNIST/raw/*-ubyte")
    ap.add_argument("--budget", type=float, required=True, help="seconds: study.optimize(timeout=...)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", required=True, help="JSON file of finished trials, rewritten after each trial")
    ap.add_argument("--epochs", type=int, default=6, help="as studies/fashion_mnist.toml's max_epochs")
    ap.add_argument("--val-size", type=int, default=10000)
    ap.add_argument("--workers", type=int, default=2, help="DataLoader worker processes")
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    t0 = time.time()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    out = Path(args.out)
    log: dict = {"pid": os.getpid(), "started": t0, "trials": []}

    def record(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        log["trials"].append({"number": trial.number, "state": trial.state.name, "value": trial.value,
                              "completed": time.time(), "params": trial.params})
        out.write_text(json.dumps(log))

    objective = Objective(args.data_root, args.val_size, args.epochs, args.seed, args.workers,
                          torch.device(args.device))
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=args.seed),
                                pruner=optuna.pruners.MedianPruner())
    out.write_text(json.dumps(log))
    study.optimize(objective, timeout=max(1.0, args.budget - (time.time() - t0)), callbacks=[record],
                   catch=(RuntimeError, ValueError))


if __name__ == "__main__":
    main()
