"""A low-resolution cache of an ImageFolder tree: every image decoded once into memory-mapped uint8 arrays.

Decoding a JPEG costs far more than a training step of a small CNN on a 64 px image, so ``prepare_cache``
decodes each file once (:func:`hpsearch.data.imagefolder.decode`) and ``load_cache`` maps the result back
in milliseconds. A cache folder holds ``train_x.u8`` and ``val_x.u8`` (raw uint8, C order, shape
``(N, 3, size, size)``: NCHW RGB, the layout of :class:`hpsearch.data.base.Dataset`), ``train_y.npy`` and
``val_y.npy`` (int64 labels) and ``meta.json``. The work is written into ``<out>.tmp-<key>/`` (the key
hashes the arguments) with a ``progress.json`` every ``CHUNK`` images, so an interrupted run resumes where
it stopped; the finished folder is renamed to ``out`` in one step, so no reader ever sees half a cache.
"""

from __future__ import annotations

import concurrent.futures as cf
import fcntl
import glob
import hashlib
import json
import multiprocessing as mp
import os
import shutil
import sys
import threading
import time
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hpsearch.data.imagefolder import decode, scan_imagefolder
from hpsearch.errors import DataError

FORMAT = "hpsearch-imagefolder-cache"
VERSION = 1
CHUNK = 512  # images between flushes of the arrays and progress.json (the most a crash can lose)
TASK = 32  # images per task sent to a worker process
SHOWN_SKIPS = 10  # skipped paths named in meta.json and in the summary line


@dataclass(frozen=True)
class CacheInfo:
    """What ``prepare_cache`` built."""

    path: Path
    classes: tuple[str, ...]
    size: int  # px, images are (3, size, size)
    n_train: int  # images in the cache (skipped ones excluded)
    n_val: int
    val_from_split: bool
    skipped: int  # unreadable image files, dropped
    skipped_paths: tuple[str, ...]  # all of them, in scan order
    ignored: int  # non-image files (by extension)
    resumed_from: int  # images already done by an interrupted run (0: a fresh start)
    seconds: float  # wall time of this call

    def headline(self) -> str:
        """The one line ``hpsearch data prepare`` ends with."""
        return (f"cache {self.path}: {self.n_train} train + {self.n_val} val images of {len(self.classes)} classes "
                f"at {self.size} px; {self.skipped} unreadable skipped; {self.seconds:.1f} s")


def parse_classes(text: str | None) -> int | list[str] | None:
    """``--classes``: a count (the first N class folders, sorted) or comma-separated folder names."""
    if not text:
        return None
    return int(text) if text.strip().isdigit() else [c.strip() for c in text.split(",") if c.strip()]


# ---- decoding, in-process or in a pool ---------------------------------------------------------------------


def _init_worker(parent: int) -> None:
    import torch

    torch.set_num_threads(1)  # one process per core does the parallelism

    def exit_with_parent() -> None:  # a killed parent never tells its pool; orphans would wait forever
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=exit_with_parent, daemon=True).start()


def _decode_many(paths: Sequence[Path], size: int) -> list[np.ndarray | None]:
    out = []
    for p in paths:
        img = decode(p, size)
        out.append(None if img is None else img.numpy())
    return out


def _decoded(paths: Sequence[Path], size: int, workers: int) -> Iterator[np.ndarray | None]:
    """Decoded images of ``paths`` in order; at most ``4 * workers`` tasks in flight, so memory stays flat."""
    if workers <= 0:
        for p in paths:
            img = decode(p, size)
            yield None if img is None else img.numpy()
        return
    import torchvision.io  # noqa: F401 (seconds to import: done once here, inherited by forked workers)
    import torchvision.transforms.v2.functional  # noqa: F401

    ctx = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else None
    pool = cf.ProcessPoolExecutor(workers, mp_context=ctx, initializer=_init_worker, initargs=(os.getpid(),))
    tasks = (paths[i : i + TASK] for i in range(0, len(paths), TASK))
    pending: deque[cf.Future] = deque()
    try:
        for task in tasks:
            pending.append(pool.submit(_decode_many, task, size))
            if len(pending) >= 4 * workers:
                yield from pending.popleft().result()
        while pending:
            yield from pending.popleft().result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


# ---- the temp folder and its progress record --------------------------------------------------------------


def _key(root: Path, size: int, classes, fraction: float, val_fraction: float, seed: int) -> str:
    args = json.dumps([VERSION, str(root), size, classes, float(fraction), float(val_fraction), seed])
    return hashlib.sha256(args.encode()).hexdigest()[:12]


def _fingerprint(items: Sequence[tuple[Path, int]]) -> str:
    h = hashlib.sha256()
    for p, label in items:
        h.update(f"{p}\0{label}\n".encode())
    return h.hexdigest()


def _write_json(path: Path, obj: dict) -> None:
    tmp = path.with_name(path.name + ".part")
    tmp.write_text(json.dumps(obj, indent=1))
    os.replace(tmp, path)  # a reader sees the old file or the new one, never half of one


def _resume_state(tmp: Path, key: str, fingerprint: str) -> dict | None:
    try:
        state = json.loads((tmp / "progress.json").read_text())
    except (OSError, ValueError):
        return None
    if state.get("key") != key or state.get("fingerprint") != fingerprint:
        return None  # other arguments or other files: start over
    return state


def _remove_stale(out: Path, keep: Path) -> None:
    """Removes temp folders of ``out`` left by interrupted runs with other arguments (none is resumable now)."""
    for other in out.parent.glob(f"{glob.escape(out.name)}.tmp-*"):
        if other == keep or not other.is_dir():
            continue
        try:
            with open(other / ".lock", "a") as f:
                fcntl.lockf(f, fcntl.LOCK_EX | fcntl.LOCK_NB)  # fails while another prepare_cache writes there
                shutil.rmtree(other)
        except OSError:
            pass


def _is_cache_or_empty(path: Path) -> bool:
    if not path.is_dir():
        return False
    return (path / "meta.json").is_file() or not any(path.iterdir())


# ---- prepare ----------------------------------------------------------------------------------------------


def prepare_cache(root: str | Path, out: str | Path, size: int = 64, classes: int | list[str] | None = None,
                  fraction: float = 1.0, val_fraction: float = 0.1, seed: int = 0, workers: int = 0,
                  progress: bool = True) -> CacheInfo:
    """Decodes every image of the ImageFolder tree ``root`` once into a cache folder ``out``.

    ``classes``, ``fraction``, ``val_fraction`` and ``seed`` are those of
    :func:`~hpsearch.data.imagefolder.scan_imagefolder`. ``workers`` > 0 decodes in that many processes.
    Unreadable images are dropped and counted. Re-running with the same arguments after an interruption goes
    on from the last recorded chunk. An existing cache at ``out`` is replaced only once the new one is
    complete; ``out`` holding anything other than a cache is refused.
    """
    t0 = time.perf_counter()
    if size < 8:
        raise DataError(f"cache `size` is {size}, but must be ≥ 8 px")
    if workers < 0:
        raise DataError(f"`workers` is {workers}, but must be ≥ 0 (0 decodes in this process)")
    root, out = Path(root).expanduser().resolve(), Path(out).expanduser().resolve()
    if out.exists() and not _is_cache_or_empty(out):
        raise DataError(f"{out} exists and is not an hpsearch image cache (no meta.json); choose another folder "
                        f"or remove it")
    index = scan_imagefolder(root, classes, fraction, val_fraction, seed)
    if not index.val:
        raise DataError(f"{root}: no validation image, but training needs some; every class has a single image, "
                        f"add images or a val/ folder")
    items = index.train + index.val  # one pass over both; rows [0, n_train) are train
    n_train_src = len(index.train)
    key = _key(root, size, classes, fraction, val_fraction, seed)
    fingerprint = _fingerprint(items)
    tmp = out.with_name(f"{out.name}.tmp-{key}")
    tmp.mkdir(parents=True, exist_ok=True)
    lock = open(tmp / ".lock", "w")  # noqa: SIM115 (held until the folder is renamed)
    try:
        try:
            fcntl.lockf(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a record lock: forked workers do not inherit it
        except OSError:
            raise DataError(f"{tmp} is being written by another prepare_cache; wait for it to finish") from None
        _remove_stale(out, tmp)
        state = _resume_state(tmp, key, fingerprint)
        if state is None:
            state = {"key": key, "fingerprint": fingerprint, "done": 0, "written": [0, 0], "skipped": []}
        resumed_from = _fill(tmp, items, n_train_src, size, workers, progress, state)
        n_train, n_val = state["written"]
        skipped = [str(items[i][0]) for i in state["skipped"]]
        if n_train == 0 or n_val == 0:
            raise DataError(f"{root}: every {'training' if n_train == 0 else 'validation'} image was unreadable "
                            f"({len(skipped)} skipped, e.g. {skipped[0]}), but training needs some")
        _finish(tmp, items, n_train_src, size, state)
        meta = {"format": FORMAT, "version": VERSION, "layout": "NCHW uint8 RGB", "classes": list(index.classes),
                "size": size, "counts": {"train": n_train, "val": n_val}, "source": str(root),
                "val_from_split": index.val_from_split,
                "args": {"classes": classes, "fraction": fraction, "val_fraction": val_fraction, "seed": seed},
                "skipped": len(skipped), "skipped_paths": skipped[:SHOWN_SKIPS], "ignored": index.ignored,
                "key": key, "fingerprint": fingerprint, "created": time.strftime("%Y-%m-%d %H:%M:%S")}
        _write_json(tmp / "meta.json", meta)
        (tmp / ".lock").unlink()
        _swap_in(tmp, out, key)
    finally:
        lock.close()
    result = CacheInfo(out, index.classes, size, n_train, n_val, index.val_from_split, len(skipped), tuple(skipped),
                       index.ignored, resumed_from, time.perf_counter() - t0)
    if progress:
        print(_summary(result), file=sys.stderr, flush=True)
    return result


def _fill(tmp: Path, items: list[tuple[Path, int]], n_train_src: int, size: int, workers: int, progress: bool,
          state: dict) -> int:
    """Decodes items[state['done']:] into the arrays, recording progress every CHUNK images; returns the start."""
    from tqdm import tqdm

    row = 3 * size * size  # bytes per image
    counts = (n_train_src, len(items) - n_train_src)
    arrays = []
    for name, n in zip(("train_x.u8", "val_x.u8"), counts, strict=True):
        path = tmp / name
        fresh = state["done"] == 0 or not path.is_file() or path.stat().st_size != n * row
        if fresh:
            state.update(done=0, written=[0, 0], skipped=[])
        arrays.append((path, n))
    if state["done"] == 0:
        for path, n in arrays:
            with open(path, "wb") as f:
                f.truncate(n * row)  # sparse: blocks are allocated as images land
    start = state["done"]
    maps = [np.memmap(p, np.uint8, "r+", shape=(n, 3, size, size)) if n else None for p, n in arrays]
    written = state["written"]
    bar = tqdm(total=len(items), initial=start, unit="img", desc=f"caching {size}px", file=sys.stderr,
               disable=not progress, smoothing=0.05)
    stream = _decoded([p for p, _ in items[start:]], size, workers)
    try:
        for i, img in enumerate(stream, start):
            if img is None:
                state["skipped"].append(i)
            else:
                split = 0 if i < n_train_src else 1
                maps[split][written[split]] = img  # (3, size, size) uint8
                written[split] += 1
            bar.update(1)
            if (i + 1) % CHUNK == 0 or i + 1 == len(items):
                for m in maps:
                    if m is not None:
                        m.flush()
                state["done"] = i + 1
                _write_json(tmp / "progress.json", state)
    finally:
        stream.close()  # stops a worker pool at once if decoding was interrupted
        bar.close()
        del maps
    return start


def _finish(tmp: Path, items: list[tuple[Path, int]], n_train_src: int, size: int, state: dict) -> None:
    """Trims the arrays to the images kept and writes the labels of those images."""
    skipped = set(state["skipped"])
    kept = [i for i in range(len(items)) if i not in skipped]
    labels = np.array([items[i][1] for i in kept], dtype=np.int64)
    n_train_kept = sum(1 for i in kept if i < n_train_src)
    for split, (name, y) in enumerate((("train", labels[:n_train_kept]), ("val", labels[n_train_kept:]))):
        assert len(y) == state["written"][split]
        os.truncate(tmp / f"{name}_x.u8", len(y) * 3 * size * size)
        np.save(tmp / f"{name}_y.npy", y)
    (tmp / "progress.json").unlink()


def _swap_in(tmp: Path, out: Path, key: str) -> None:
    """Renames ``tmp`` to ``out``; an existing ``out`` is renamed aside first and removed once replaced."""
    if not out.exists():
        os.rename(tmp, out)
        return
    old = out.with_name(f"{out.name}.old-{key}-{os.getpid()}")
    os.rename(out, old)
    os.rename(tmp, out)
    shutil.rmtree(old, ignore_errors=True)  # readers that still map old files keep them until they close


def _summary(info: CacheInfo) -> str:
    line = (f"cached {info.n_train:,} train + {info.n_val:,} val images ({len(info.classes)} classes, {info.size} px) "
            f"in {info.path} in {info.seconds:.1f} s")
    if info.resumed_from:
        line += f", resumed after {info.resumed_from:,}"
    if info.skipped:
        shown = ", ".join(info.skipped_paths[:SHOWN_SKIPS]) + (", ..." if info.skipped > SHOWN_SKIPS else "")
        line += f"; skipped {info.skipped:,} unreadable: {shown}"
    if info.ignored:
        line += f"; ignored {info.ignored:,} non-image file{'s' if info.ignored != 1 else ''}"
    return line


# ---- load -------------------------------------------------------------------------------------------------


def load_cache(path: str | Path) -> dict:
    """Maps a cache folder made by ``prepare_cache``; nothing is read until used.

    Returns read-only numpy arrays ``train_images``/``val_images`` (N, 3, H, W) uint8 (NCHW, not the NHWC
    of the other loaders: pass them to ``torch.from_numpy``, not to ``as_nchw``), ``train_labels``/
    ``val_labels`` (N,) int64, plus ``classes`` (tuple), ``meta`` (the meta.json dict) and ``dir``.
    """
    folder = Path(path).expanduser()
    try:
        meta = json.loads((folder / "meta.json").read_text())
    except FileNotFoundError:
        raise DataError(f"{folder} is not an hpsearch image cache: it has no meta.json; build one with "
                        f"prepare_cache") from None
    except (OSError, ValueError) as e:
        raise DataError(f"{folder}/meta.json cannot be read ({e}), but an image cache needs it") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT or meta.get("version") != VERSION:
        seen = meta.get("version") if isinstance(meta, dict) else None
        raise DataError(f"{folder} is not an hpsearch image cache of version {VERSION} (format "
                        f"{meta.get('format') if isinstance(meta, dict) else None!r}, version {seen!r}); rebuild "
                        f"it with prepare_cache")
    try:
        size, classes = int(meta["size"]), tuple(meta["classes"])
        counts = {s: int(meta["counts"][s]) for s in ("train", "val")}
    except (KeyError, TypeError, ValueError) as e:
        raise DataError(f"{folder}/meta.json lacks or garbles {e}, but an image cache needs size, classes and "
                        f"counts") from None
    out: dict = {"classes": classes, "meta": meta, "dir": folder}
    for split, n in counts.items():
        x_path, y_path = folder / f"{split}_x.u8", folder / f"{split}_y.npy"
        nbytes = n * 3 * size * size
        if not x_path.is_file() or x_path.stat().st_size != nbytes:
            seen = x_path.stat().st_size if x_path.is_file() else "missing"
            raise DataError(f"{x_path} has {seen} bytes, but meta.json says {n} images of 3x{size}x{size} "
                            f"({nbytes} bytes)")
        try:
            y = np.load(y_path, mmap_mode="r")
        except (OSError, ValueError) as e:
            raise DataError(f"{y_path} cannot be read ({e}), but an image cache needs it") from None
        if y.shape != (n,) or y.dtype != np.int64:
            raise DataError(f"{y_path} holds {y.dtype} labels of shape {y.shape}, but meta.json says {n} int64")
        if n and (int(y.min()) < 0 or int(y.max()) >= len(classes)):
            raise DataError(f"{y_path} has a label outside 0..{len(classes) - 1}, but there are {len(classes)} "
                            f"classes")
        if n:
            x = np.memmap(x_path, np.uint8, "r", shape=(n, 3, size, size))
        else:
            x = np.zeros((0, 3, size, size), np.uint8)
            x.flags.writeable = False
        out[f"{split}_images"], out[f"{split}_labels"] = x, y
    return out
