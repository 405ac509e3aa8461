"""ImageNet-style folders (``root/train/<class>/*``, optional ``root/val/<class>/*``): listing and decoding.

``scan_imagefolder`` lists the image files, picks the classes, keeps a seeded fraction of each class and,
when there is no ``val/`` folder, holds a seeded fraction of each training class out for validation.
Every random choice is seeded by (seed, class name), so a class keeps the same images whichever other
classes are selected. ``decode`` turns one file into a square uint8 RGB tensor and returns None for a file
it cannot read, so one corrupt image never stops a pass over a million. :mod:`hpsearch.data.cache` uses both
to build the low-resolution cache that training reads.
"""

from __future__ import annotations

import os
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from hpsearch.data.base import check_readable
from hpsearch.errors import DataError

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
_FRACTION, _SPLIT = 1, 2  # stream ids: the per-class generators for `fraction` and for the split differ


@dataclass(frozen=True)
class FolderIndex:
    """The files of one ImageFolder tree; labels index ``classes``."""

    classes: tuple[str, ...]
    train: list[tuple[Path, int]]  # (file, label), sorted by class then path
    val: list[tuple[Path, int]]
    val_from_split: bool  # True: there is no val/ folder and ``val`` was held out of train/
    ignored: int  # files skipped by extension (not images), in the folders that were listed


def _list_images(folder: Path) -> tuple[list[Path], int]:
    """Image files under ``folder`` (recursively, following links), sorted; and the count of other files."""
    images: list[Path] = []
    ignored = 0
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        dirnames.sort()
        for name in filenames:
            if os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS:
                images.append(Path(dirpath) / name)
            else:
                ignored += 1
    images.sort()
    return images, ignored


def _rng(seed: int, name: str, stream: int) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(name.encode()), stream])


def _keep_fraction(files: list[Path], fraction: float, seed: int, name: str) -> list[Path]:
    if fraction >= 1.0:
        return files
    n_keep = max(1, round(len(files) * fraction))
    keep = np.sort(_rng(seed, name, _FRACTION).permutation(len(files))[:n_keep])
    return [files[i] for i in keep]


def _select_classes(found: list[str], classes: int | list[str] | tuple[str, ...] | None, train_dir: Path) -> list[str]:
    if classes is None:
        return found
    if isinstance(classes, bool) or not isinstance(classes, int | list | tuple):
        raise DataError(f"`classes` is {classes!r}, but must be a number of classes or a list of class names")
    if isinstance(classes, int):
        if not 1 <= classes <= len(found):
            raise DataError(f"`classes` is {classes}, but must be between 1 and {len(found)} (the class folders "
                            f"in {train_dir})")
        return found[:classes]
    if not classes:
        raise DataError("`classes` is an empty list, but must name at least one class folder")
    known = set(found)
    for name in classes:
        if name not in known:
            shown = ", ".join(found[:20]) + (f", ... ({len(found)} in all)" if len(found) > 20 else "")
            raise DataError(f"`classes` names {name!r}, but {train_dir} has no such class folder; it has: {shown}")
    if len(set(classes)) != len(classes):
        dup = next(c for c in classes if list(classes).count(c) > 1)
        raise DataError(f"`classes` names {dup!r} twice, but each class may appear once")
    return list(classes)


def scan_imagefolder(root: str | Path, classes: int | list[str] | None = None, fraction: float = 1.0,
                     val_fraction: float = 0.1, seed: int = 0) -> FolderIndex:
    """Lists ``root/train/<class>/*`` (and ``root/val/<class>/*`` if present) as (file, label) pairs.

    ``classes``: None for every class folder (sorted by name), an int N for the first N in sorted order, or a
    list of names (labels follow the list's order). ``fraction`` in (0, 1] keeps a seeded fraction of each
    class's images (at least one). Without ``val/``, ``val_fraction`` of each class's (kept) training images
    is held out, at least one and never all of them; a class with a single image then has no val image.
    """
    root = Path(root).expanduser()
    if not 0.0 < fraction <= 1.0:
        raise DataError(f"`fraction` is {fraction}, but must be in (0, 1]")
    if not 0.0 < val_fraction < 1.0:
        raise DataError(f"`val_fraction` is {val_fraction}, but must be in (0, 1)")
    check_readable(root)
    if not root.is_dir():
        raise DataError(f"image folder {root} does not exist or is not a folder; expected {root}/train/<class>/")
    train_dir, val_dir = root / "train", root / "val"
    check_readable(train_dir)
    check_readable(val_dir)
    if not train_dir.is_dir():
        raise DataError(f"image folder {root} has no train/ subfolder; expected {train_dir}/<class>/<image files>")
    found = sorted(d.name for d in train_dir.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not found:
        raise DataError(f"{train_dir} has no class folders; expected {train_dir}/<class>/<image files>")
    chosen = _select_classes(found, classes, train_dir)
    val_from_split = not val_dir.is_dir()

    train: list[tuple[Path, int]] = []
    val: list[tuple[Path, int]] = []
    ignored = 0
    for label, name in enumerate(chosen):
        check_readable(train_dir / name)
        if not val_from_split:
            check_readable(val_dir / name)
        files, n_other = _list_images(train_dir / name)
        ignored += n_other
        if not files:
            raise DataError(f"class folder {train_dir / name} holds no image files, but every class needs at least "
                            f"one ({', '.join(sorted(IMAGE_EXTENSIONS))})")
        files = _keep_fraction(files, fraction, seed, name)
        if val_from_split:
            n = len(files)
            n_val = min(n - 1, max(1, round(n * val_fraction)))
            held = set(_rng(seed, name, _SPLIT).permutation(n)[:n_val].tolist())
            val += [(f, label) for i, f in enumerate(files) if i in held]
            train += [(f, label) for i, f in enumerate(files) if i not in held]
        else:
            train += [(f, label) for f in files]
            if not (val_dir / name).is_dir():
                raise DataError(f"{val_dir} has no folder for class {name!r}, but it must hold one per training "
                                f"class (or be removed to split train/)")
            vfiles, n_other = _list_images(val_dir / name)
            ignored += n_other
            if not vfiles:
                raise DataError(f"class folder {val_dir / name} holds no image files, but every class needs at "
                                f"least one ({', '.join(sorted(IMAGE_EXTENSIONS))})")
            val += [(f, label) for f in _keep_fraction(vfiles, fraction, seed, name)]
    return FolderIndex(tuple(chosen), train, val, val_from_split, ignored)


# ----------------------------------------------------------------------------------------------------------


def _decode_torchvision(data: bytes) -> torch.Tensor | None:
    try:
        from torchvision.io import ImageReadMode, decode_image

        with warnings.catch_warnings():
            # torchvision 0.29 deprecates its decoders in favour of torchcodec; they still work.
            warnings.simplefilter("ignore", DeprecationWarning)
            img = decode_image(torch.frombuffer(bytearray(data), dtype=torch.uint8), ImageReadMode.RGB)
    except Exception:  # BMP/TIFF, odd JPEGs, a torchvision without decoders: PIL tries next
        return None
    if img.ndim == 4:  # an animated GIF: (frames, C, H, W); keep the first frame
        img = img[0]
    if img.dtype != torch.uint8:  # 16-bit PNG
        from torchvision.transforms.v2.functional import to_dtype

        img = to_dtype(img, torch.uint8, scale=True)
    return img


def _decode_pil(path: Path) -> torch.Tensor | None:
    try:
        from PIL import Image

        with Image.open(path) as im:
            rgb = np.asarray(im.convert("RGB"))  # (H, W, 3) uint8; first frame of an animation
    except Exception:  # truncated, corrupt, not an image, a decompression bomb
        return None
    return torch.from_numpy(rgb.copy()).permute(2, 0, 1)


def decode(path: Path, size: int) -> torch.Tensor | None:
    """One image file as a uint8 RGB tensor (3, size, size), or None if it cannot be read.

    Any mode (L, LA, RGB, RGBA, P, CMYK, 16-bit) becomes RGB; alpha is dropped, as PIL's ``convert("RGB")``
    does. The shorter side is resized to ``size`` (bilinear, antialiased), then the centre is cropped.
    """
    try:
        data = Path(path).read_bytes()
    except OSError:
        return None
    if not data:
        return None
    img = _decode_torchvision(data)
    if img is None:
        img = _decode_pil(Path(path))
    if img is None or img.shape[1] == 0 or img.shape[2] == 0:
        return None
    from torchvision.transforms.v2.functional import center_crop, resize

    try:
        img = resize(img, [size], antialias=True)  # shorter side -> size px
        return center_crop(img, [size, size]).contiguous()  # (3, size, size) uint8
    except (RuntimeError, ValueError, MemoryError):  # e.g. a 1 x 100,000 px strip
        return None
