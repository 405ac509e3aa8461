"""ImageFolder trees: class discovery, class selection, fractions, the seeded split, decoding of every mode."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from hpsearch.data.imagefolder import decode, scan_imagefolder
from hpsearch.errors import DataError

CLASSES = ("cat", "dog", "fox")
# (mode, format) of the good images in every class: PNG and JPEG, grey, colour, alpha, palette and CMYK
KINDS = [("L", "png"), ("RGB", "png"), ("RGBA", "png"), ("P", "png"), ("L", "jpg"), ("RGB", "jpg"),
         ("CMYK", "jpg"), ("RGB", "jpeg")]


def smooth_image(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """(h, w, 3) uint8 with structure (gradients and a disc), so resizing is checkable against PIL."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    c = rng.uniform(0.2, 0.8, 3)
    img = np.stack([c[0] * 255 * xx / w, c[1] * 255 * yy / h, np.full((h, w), c[2] * 255)], axis=-1)
    cy, cx, r = rng.uniform(0.3, 0.7) * h, rng.uniform(0.3, 0.7) * w, min(h, w) * 0.25
    img[(yy - cy) ** 2 + (xx - cx) ** 2 < r**2] = rng.uniform(0, 255, 3)
    return img.clip(0, 255).astype(np.uint8)


def write_image(path: Path, arr: np.ndarray, mode: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.fromarray(arr).convert(mode)
    im.save(path, quality=95) if path.suffix in (".jpg", ".jpeg") else im.save(path)
    return path


def make_tree(root: Path, per_class: int = len(KINDS), val_per_class: int = 0, seed: int = 0) -> dict:
    """root/train/<class>/ with ``per_class`` good images each, plus in ``cat``: a truncated JPEG, a zero-byte
    .jpg and a .txt. Returns the paths of interest."""
    rng = np.random.default_rng(seed)
    good: list[Path] = []
    for split, n in (("train", per_class), ("val", val_per_class)):
        for c in CLASSES:
            if split == "val" and n == 0:
                continue
            (root / split / c).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                mode, ext = KINDS[i % len(KINDS)]
                h, w = int(rng.integers(30, 60)), int(rng.integers(30, 60))
                good.append(write_image(root / split / c / f"{c}_{i:02d}.{ext}", smooth_image(rng, h, w), mode))
    cat = root / "train" / "cat"
    corrupt = cat / "corrupt.jpg"
    corrupt.write_bytes((cat / "cat_05.jpg").read_bytes()[:300])  # a JPEG cut short
    empty = cat / "empty.jpg"
    empty.write_bytes(b"")
    (cat / "notes.txt").write_text("not an image")
    return {"good": good, "corrupt": corrupt, "empty": empty}


@pytest.fixture
def tree(tmp_path):
    return tmp_path / "imgs", make_tree(tmp_path / "imgs")


def test_classes_are_sorted_folder_names_and_labels_follow(tree):
    root, files = tree
    idx = scan_imagefolder(root)
    assert idx.classes == CLASSES
    listed = idx.train + idx.val
    assert len(listed) == 3 * len(KINDS) + 2, "good images plus the corrupt and the zero-byte .jpg"
    assert all(idx.classes[label] == p.parent.name for p, label in listed), "label = index of its folder"
    assert idx.ignored == 1 and not any(p.suffix == ".txt" for p, _ in listed), "the .txt is ignored, counted"
    assert idx.val_from_split


def test_decode_turns_every_mode_into_rgb_and_bad_files_into_none(tree):
    root, files = tree
    for p in files["good"]:
        img = decode(p, 24)
        assert img is not None and img.dtype == torch.uint8 and img.shape == (3, 24, 24), p.name
    assert decode(files["corrupt"], 24) is None, "a truncated JPEG is unreadable, not an exception"
    assert decode(files["empty"], 24) is None, "a zero-byte file is unreadable"
    assert decode(root / "missing.png", 24) is None
    grey = decode(next(p for p in files["good"] if p.name.endswith("_00.png")), 24)
    assert torch.equal(grey[0], grey[1]) and torch.equal(grey[1], grey[2]), "grey becomes three equal channels"


def test_decode_matches_pil_for_cmyk_and_palette(tree):
    root, files = tree
    for suffix in ("_06.jpg", "_03.png"):  # CMYK JPEG, palette PNG
        p = next(q for q in files["good"] if q.name.endswith(suffix))
        with Image.open(p) as im:
            rgb = np.asarray(im.convert("RGB"))
        size = min(rgb.shape[:2])  # no resize: only the centre crop, so the pixels must agree exactly
        top, left = round((rgb.shape[0] - size) / 2), round((rgb.shape[1] - size) / 2)
        want = rgb[top : top + size, left : left + size].transpose(2, 0, 1)
        assert np.abs(decode(p, size).numpy().astype(int) - want).mean() < 1.0, p.name


def test_split_without_val_folder_is_seeded_disjoint_and_per_class(tmp_path):
    root = tmp_path / "imgs"
    make_tree(root, per_class=10)
    a = scan_imagefolder(root, val_fraction=0.2, seed=1)
    b = scan_imagefolder(root, val_fraction=0.2, seed=1)
    c = scan_imagefolder(root, val_fraction=0.2, seed=2)
    assert a == b, "same seed, same split"
    assert a.val != c.val, "another seed, another split"
    assert not {p for p, _ in a.train} & {p for p, _ in a.val}, "train and val are disjoint"
    counts = np.bincount([label for _, label in a.val], minlength=3)
    assert counts.tolist() == [2, 2, 2], "20 % of each class (cat's 12 files round to 2)"
    everything = sorted(p for p, _ in scan_imagefolder(root).train + scan_imagefolder(root).val)
    assert sorted(p for p, _ in a.train + a.val) == everything, "the split loses nothing"


def test_val_folder_is_used_when_present(tmp_path):
    root = tmp_path / "imgs"
    make_tree(root, per_class=6, val_per_class=2)
    idx = scan_imagefolder(root)
    assert not idx.val_from_split
    assert all(p.parts[-3] == "val" for p, _ in idx.val) and len(idx.val) == 6
    assert all(p.parts[-3] == "train" for p, _ in idx.train) and len(idx.train) == 3 * 6 + 2


def test_classes_as_count_or_names(tree):
    root, _ = tree
    assert scan_imagefolder(root, classes=2).classes == ("cat", "dog")
    idx = scan_imagefolder(root, classes=["fox", "cat"])
    assert idx.classes == ("fox", "cat"), "labels follow the order of the list"
    assert {p.parent.name for p, label in idx.train if label == 0} == {"fox"}
    with pytest.raises(DataError, match="'wolf'"):
        scan_imagefolder(root, classes=["cat", "wolf"])
    for bad in (0, 4):
        with pytest.raises(DataError, match=f"`classes` is {bad}"):
            scan_imagefolder(root, classes=bad)


def test_a_class_keeps_its_split_whatever_else_is_selected(tree):
    root, _ = tree
    full = scan_imagefolder(root, seed=5)
    dog = scan_imagefolder(root, classes=["dog"], seed=5)
    assert [p for p, _ in dog.val] == [p for p, label in full.val if label == 1]


def test_fraction_keeps_a_seeded_share_of_each_class(tmp_path):
    root = tmp_path / "imgs"
    make_tree(root, per_class=10)
    full = scan_imagefolder(root)
    half = scan_imagefolder(root, fraction=0.5, seed=3)
    assert half == scan_imagefolder(root, fraction=0.5, seed=3), "deterministic for a seed"
    kept = half.train + half.val
    assert np.bincount([label for _, label in kept]).tolist() == [6, 5, 5], "half of 12, 10 and 10 files"
    assert {p for p, _ in kept} <= {p for p, _ in full.train + full.val}
    tiny = scan_imagefolder(root, fraction=0.01)
    assert len(tiny.train) + len(tiny.val) == 3, "at least one image per class"
    with pytest.raises(DataError, match="`fraction` is 0"):
        scan_imagefolder(root, fraction=0)


def test_empty_class_folder_is_an_error_naming_it(tree):
    root, _ = tree
    (root / "train" / "emu").mkdir()
    (root / "train" / "emu" / "Thumbs.db").write_bytes(b"\0")
    with pytest.raises(DataError, match=r"train/emu holds no image files"):
        scan_imagefolder(root)
    assert scan_imagefolder(root, classes=["cat"]).classes == ("cat",), "unselected classes are not listed"


def test_missing_root_or_train_folder_names_the_path(tmp_path):
    with pytest.raises(DataError, match=str(tmp_path / "nowhere")):
        scan_imagefolder(tmp_path / "nowhere")
    (tmp_path / "flat").mkdir()
    with pytest.raises(DataError, match="has no train/"):
        scan_imagefolder(tmp_path / "flat")
