"""CIFAR-10 and CIFAR-100 from the standard python batches (``cifar-10-batches-py``).

The batches are pickles; they are read with a restricted unpickler that only builds dicts, lists,
strings, bytes and numpy arrays, so a planted file cannot run code. Files are looked for in
``--data-dir`` / the spec's ``root``, ``$HPSEARCH_DATA``, then torchvision's download into
``~/.cache/hpsearch``.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np

from hpsearch.data.base import check_readable
from hpsearch.errors import DataError, first_line

LAYOUT = {
    "cifar10": ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], "test_batch", "batches.meta",
                "label_names", b"labels", "CIFAR10"),
    "cifar100": ("cifar-100-python", ["train"], "test", "meta", "fine_label_names", b"fine_labels", "CIFAR100"),
}
_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"), ("_codecs", "encode"),
}


class SafeUnpickler(pickle.Unpickler):
    """Refuses every global except the few numpy constructors a CIFAR batch needs."""

    def find_class(self, module: str, name: str):
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def safe_unpickle(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            obj = SafeUnpickler(f, encoding="bytes").load()
    except Exception as e:  # a damaged pickle fails in a dozen ways (IndexError, MemoryError, KeyError, ...)
        reason = first_line(e, type(e).__name__)
        raise DataError(f"cannot read {path}: {reason}") from None
    if not isinstance(obj, dict):
        raise DataError(f"{path} is not a CIFAR batch (a {type(obj).__name__}, not a dict)")
    return {k.decode("utf-8", "replace") if isinstance(k, bytes) else k: v for k, v in obj.items()}


def _batch(path: Path, label_key: bytes) -> tuple[np.ndarray, np.ndarray]:
    d = safe_unpickle(path)
    key = label_key.decode()
    if "data" not in d or key not in d:
        raise DataError(f"{path} is not a CIFAR batch: it lacks 'data' or '{key}'")
    try:
        x, y = np.asarray(d["data"]), np.asarray(d[key])
    except (TypeError, ValueError) as e:  # ragged lists
        raise DataError(f"{path}: 'data' or '{key}' is not an array ({e})") from None
    if x.ndim != 2 or x.shape[1] != 3072:
        raise DataError(f"{path}: data has shape {x.shape}, but CIFAR rows are 3072 bytes (3x32x32)")
    if x.dtype != np.uint8 and (x.dtype.kind not in "iu" or (x.size and (x.min() < 0 or x.max() > 255))):
        raise DataError(f"{path}: data holds {x.dtype} values, but CIFAR pixels are bytes (0-255)")
    if y.ndim != 1 or (y.size and y.dtype.kind not in "iu"):
        raise DataError(f"{path}: '{key}' holds {y.dtype} of shape {y.shape}, but labels are N integers")
    x, y = x.astype(np.uint8, copy=False), y.astype(np.int64, copy=False)
    if len(y) != len(x):
        raise DataError(f"{path} holds {len(x)} images but {len(y)} labels")
    return x.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), y  # (N, H, W, C)


def _read(folder: Path, name: str) -> dict | None:
    _, train_files, test_file, meta_file, names_key, label_key, _ = LAYOUT[name]
    if not all((folder / f).is_file() for f in train_files):
        return None
    xs, ys = zip(*(_batch(folder / f, label_key) for f in train_files), strict=True)
    out = {"train_images": np.concatenate(xs), "train_labels": np.concatenate(ys), "dir": folder}
    if (folder / test_file).is_file():
        out["test_images"], out["test_labels"] = _batch(folder / test_file, label_key)
    n_classes = 10 if name == "cifar10" else 100
    names = [f"class_{i}" for i in range(n_classes)]
    if (folder / meta_file).is_file():
        meta = safe_unpickle(folder / meta_file)
        raw = meta.get(names_key)
        if isinstance(raw, list) and len(raw) == n_classes:
            names = [n.decode() if isinstance(n, bytes) else str(n) for n in raw]
    out["classes"] = tuple(names)
    for split in ("train", "test"):
        y = out.get(f"{split}_labels")
        if y is not None and y.size and (y.min() < 0 or y.max() >= n_classes):
            bad = int(y.min()) if y.min() < 0 else int(y.max())
            raise DataError(f"{folder}: a {split} label is {bad}, but {name} has {n_classes} classes "
                            f"(labels 0-{n_classes - 1})")
    return out


def load_cifar(name: str, root: str | None, download: bool = True) -> tuple[dict, str]:
    folder_name, *_, tv_class = LAYOUT[name]
    bases = [Path(b).expanduser() for b in (root, os.environ.get("HPSEARCH_DATA")) if b]
    cache = Path.home() / ".cache" / "hpsearch"
    tried = []
    for base in [*bases, cache]:
        for folder in (base, base / folder_name):
            tried.append(str(folder))
            check_readable(folder)
            if folder.is_dir() and (arrays := _read(folder, name)) is not None:
                return arrays, f"{name} from {folder}"
    if download:
        try:
            import torchvision.datasets as tvd

            getattr(tvd, tv_class)(str(cache), train=True, download=True)
            if (arrays := _read(cache / folder_name, name)) is not None:
                return arrays, f"{name} downloaded to {cache / folder_name}"
        except Exception:  # offline: report every option below
            pass
    raise DataError(f"{name} not found: looked in {', '.join(dict.fromkeys(tried))}; pass --data-dir DIR or set "
                    f"$HPSEARCH_DATA to a folder holding {folder_name}/" + ("; torchvision's download failed too"
                                                                            if download else ""))
