"""The low-resolution cache: exact round trip, skip report, resuming after an interruption, atomic replacement."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from test_imagefolder import make_tree

import hpsearch.data.cache as cache
from hpsearch.data.cache import load_cache, prepare_cache
from hpsearch.data.imagefolder import decode, scan_imagefolder
from hpsearch.errors import DataError

SIZE = 20  # px: small, and not a divisor of the source sizes, so every image is really resized


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "imgs"
    return root, make_tree(root)


def kept_rows(root, skipped: set[str]) -> tuple[list, list]:
    """The (path, label) of each cache row: the scan order with the unreadable files left out."""
    idx = scan_imagefolder(root)
    return ([(p, y) for p, y in idx.train if str(p) not in skipped],
            [(p, y) for p, y in idx.val if str(p) not in skipped])


def pil_reference(path, size: int) -> np.ndarray:
    """An independent resize: PIL's antialiased bilinear on the shorter side, then the centre crop (3, s, s)."""
    with Image.open(path) as im:
        im = im.convert("RGB")
        w, h = im.size
        scale = size / min(w, h)
        im = im.resize((max(size, int(w * scale)), max(size, int(h * scale))), Image.Resampling.BILINEAR)
        left, top = round((im.width - size) / 2), round((im.height - size) / 2)
        return np.asarray(im.crop((left, top, left + size, top + size))).transpose(2, 0, 1)


def test_round_trip_equals_decode_and_is_close_to_pil(tree, tmp_path):
    root, files = tree
    info = prepare_cache(root, tmp_path / "c", size=SIZE, progress=False)
    c = load_cache(tmp_path / "c")
    assert c["classes"] == ("cat", "dog", "fox") and c["meta"]["size"] == SIZE
    train, val = kept_rows(root, set(info.skipped_paths))
    assert c["train_images"].shape == (len(train), 3, SIZE, SIZE) and c["train_images"].dtype == np.uint8
    assert c["val_images"].shape == (len(val), 3, SIZE, SIZE)
    assert (info.n_train, info.n_val) == (len(train), len(val)) == tuple(c["meta"]["counts"].values())
    assert not c["train_images"].flags.writeable, "the arrays are mapped read-only"
    for rows, x, y in ((train, c["train_images"], c["train_labels"]), (val, c["val_images"], c["val_labels"])):
        assert y.dtype == np.int64 and y.tolist() == [label for _, label in rows]
        for k, (p, _) in enumerate(rows):
            assert np.array_equal(x[k], decode(p, SIZE).numpy()), f"row {k} is decode({p.name}) exactly"
            diff = np.abs(x[k].astype(int) - pil_reference(p, SIZE)).mean()
            assert diff < 3.0, f"{p.name} differs from PIL's resize by {diff:.2f} on average"


def test_unreadable_files_are_dropped_counted_and_named_once(tree, tmp_path, capsys):
    root, files = tree
    info = prepare_cache(root, tmp_path / "c", size=SIZE, progress=True)
    assert info.skipped == 2
    assert set(info.skipped_paths) == {str(files["corrupt"]), str(files["empty"])}
    assert info.ignored == 1, "the .txt is ignored, not skipped"
    meta = json.loads((tmp_path / "c" / "meta.json").read_text())
    assert meta["skipped"] == 2 and set(meta["skipped_paths"]) == set(info.skipped_paths)
    assert info.n_train + info.n_val == 3 * 8, "every good image is cached"
    summary = [line for line in capsys.readouterr().err.replace("\r", "\n").splitlines() if "skipped" in line]
    assert len(summary) == 1 and "corrupt.jpg" in summary[0] and "empty.jpg" in summary[0], summary


def test_interrupted_prepare_resumes_without_decoding_again(tree, tmp_path, monkeypatch):
    root, _ = tree
    monkeypatch.setattr(cache, "CHUNK", 4)  # progress recorded every 4 images
    calls: list = []

    def failing(path, size):
        if len(calls) == 10:
            raise KeyboardInterrupt
        calls.append(path)
        return decode(path, size)

    monkeypatch.setattr(cache, "decode", failing)
    with pytest.raises(KeyboardInterrupt):
        prepare_cache(root, tmp_path / "c", size=SIZE, progress=False)
    assert not (tmp_path / "c").exists(), "no cache until prepare completes"
    first = list(calls)
    recorded = 8  # chunks of 4 completed before the 11th image failed

    calls.clear()
    monkeypatch.setattr(cache, "decode", lambda path, size: calls.append(path) or decode(path, size))
    info = prepare_cache(root, tmp_path / "c", size=SIZE, progress=False)
    total = len(scan_imagefolder(root).train) + len(scan_imagefolder(root).val)
    assert info.resumed_from == recorded
    assert len(calls) == total - recorded, "only the images after the last recorded chunk are decoded"
    assert not set(first[:recorded]) & set(calls), "images done before are not decoded again"

    monkeypatch.setattr(cache, "decode", decode)
    prepare_cache(root, tmp_path / "ref", size=SIZE, progress=False)
    a, b = load_cache(tmp_path / "c"), load_cache(tmp_path / "ref")
    for key in ("train_images", "train_labels", "val_images", "val_labels"):
        assert np.array_equal(a[key], b[key]), f"{key} equals an uninterrupted run's"
    assert a["meta"]["skipped_paths"] == b["meta"]["skipped_paths"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c", "imgs", "ref"], "no temp folder is left"


def test_other_arguments_start_over(tree, tmp_path, monkeypatch):
    root, _ = tree
    monkeypatch.setattr(cache, "CHUNK", 4)
    calls: list = []

    def failing(path, size):
        if len(calls) == 6:
            raise RuntimeError("interrupted")
        calls.append(path)
        return decode(path, size)

    monkeypatch.setattr(cache, "decode", failing)
    with pytest.raises(RuntimeError):
        prepare_cache(root, tmp_path / "c", size=SIZE, progress=False)
    monkeypatch.setattr(cache, "decode", decode)
    assert prepare_cache(root, tmp_path / "c", size=SIZE, seed=1, progress=False).resumed_from == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c", "imgs"], "the other run's temp folder is removed"


def test_readers_never_see_a_partial_cache(tree, tmp_path, monkeypatch):
    root, _ = tree
    out = tmp_path / "c"

    def absent(path, size):
        assert not out.exists(), "out appears only once complete"
        return decode(path, size)

    monkeypatch.setattr(cache, "decode", absent)
    prepare_cache(root, out, size=16, progress=False)

    def old_still_readable(path, size):
        assert load_cache(out)["meta"]["size"] == 16, "while the new cache is built, out is the old one"
        return decode(path, size)

    monkeypatch.setattr(cache, "decode", old_still_readable)
    prepare_cache(root, out, size=SIZE, progress=False)
    assert load_cache(out)["meta"]["size"] == SIZE
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c", "imgs"], "the old cache is removed"


def test_workers_give_the_same_cache(tree, tmp_path):
    root, _ = tree
    prepare_cache(root, tmp_path / "a", size=SIZE, progress=False)
    prepare_cache(root, tmp_path / "b", size=SIZE, workers=2, progress=False)
    a, b = load_cache(tmp_path / "a"), load_cache(tmp_path / "b")
    assert np.array_equal(a["train_images"], b["train_images"]) and np.array_equal(a["val_labels"], b["val_labels"])


def test_load_cache_refuses_other_folders(tree, tmp_path):
    root, _ = tree
    plain = tmp_path / "plain"
    plain.mkdir()
    with pytest.raises(DataError, match=f"{plain} is not an hpsearch image cache"):
        load_cache(plain)
    prepare_cache(root, tmp_path / "c", size=SIZE, progress=False)
    meta = json.loads((tmp_path / "c" / "meta.json").read_text())
    (tmp_path / "c" / "meta.json").write_text(json.dumps({**meta, "version": 99}))
    with pytest.raises(DataError, match="version 99"):
        load_cache(tmp_path / "c")
    (tmp_path / "c" / "meta.json").write_text(json.dumps({**meta, "counts": {"train": 1000, "val": 1}}))
    with pytest.raises(DataError, match="train_x.u8 has"):
        load_cache(tmp_path / "c")


def test_prepare_refuses_to_replace_a_folder_that_is_not_a_cache(tree, tmp_path):
    root, _ = tree
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("precious")
    with pytest.raises(DataError, match="is not an hpsearch image cache"):
        prepare_cache(root, tmp_path / "mine", size=SIZE, progress=False)
    assert (tmp_path / "mine" / "thesis.tex").read_text() == "precious"
