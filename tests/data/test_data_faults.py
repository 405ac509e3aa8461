"""Data faults: damaged IDX and CIFAR files, unreadable folders, labels beyond the class count, images smaller
than a model accepts, an ImageFolder of unreadable files. Each is a DataError (or SpecError) naming the file
or folder and what is wrong; through the CLI, exit 2 with one error line and no traceback."""

from __future__ import annotations

import ctypes
import gzip
import os
import pickle
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import run_cli

from hpsearch.data import load_dataset
from hpsearch.data.cache import load_cache, prepare_cache
from hpsearch.data.cifar import safe_unpickle
from hpsearch.data.idx import read_idx, write_idx
from hpsearch.errors import DataError, SpecError
from hpsearch.models import create_model
from hpsearch.spec import DataSpec
from studies import write_study

IMAGES, LABELS = "train-images-idx3-ubyte", "train-labels-idx1-ubyte"


@pytest.fixture(autouse=True)
def no_download(monkeypatch):
    """Offline and hermetic: only the folders a test names are looked in."""
    from hpsearch.data import mnist

    monkeypatch.delenv("HPSEARCH_DATA", raising=False)
    monkeypatch.setattr(mnist, "_download", lambda name: None)  # (load_cifar is called with download=False)


def write_mnist(folder: Path, images: np.ndarray | None = None, labels: np.ndarray | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    write_idx(folder / IMAGES, rng.integers(0, 256, (20, 28, 28)) if images is None else images)
    write_idx(folder / LABELS, np.arange(20) % 10 if labels is None else labels)
    return folder


def load_mnist(folder: Path):
    return load_dataset(DataSpec("mnist", val_size=4), seed=0, data_dir=str(folder))


def idx_header(*shape: int, type_code: int = 0x08) -> bytes:
    return bytes([0, 0, type_code, len(shape)]) + struct.pack(f">{len(shape)}I", *shape)


# ---------------------------------------------------------------------------------------------------------
# IDX


@pytest.mark.parametrize("content,what", [
    (b"", "bad magic number"),
    (b"\x01\x02\x08\x03", "bad magic number"),
    (idx_header(20, 28, 28, type_code=0x0D), "IDX type 0x0d"),
    (bytes([0, 0, 8, 3]) + b"\x00\x00", "truncated (header)"),
    (idx_header(20, 28, 28) + bytes(100), "header says 15680"),
    (idx_header(20, 28, 28) + bytes(20 * 28 * 28 + 7), "truncated or padded"),
    (idx_header(2**32 - 1, 2**32 - 1, 2**32 - 1) + bytes(8), "header says 79228162458924105385300197375"),
])
def test_damaged_idx_names_the_file_and_the_fault(tmp_path, content, what):
    write_mnist(tmp_path)
    (tmp_path / IMAGES).write_bytes(content)
    with pytest.raises(DataError) as e:
        load_mnist(tmp_path)
    assert str(tmp_path / IMAGES) in str(e.value) and what in str(e.value), str(e.value)


def test_corrupt_compressed_idx_names_the_file(tmp_path):
    raw = idx_header(3, 2, 2) + bytes(range(12))
    cases = {"short.gz": gzip.compress(raw)[:-6], "flipped.gz": bytes(b ^ 0x5A if 12 <= i < 20 else b
                                                                     for i, b in enumerate(gzip.compress(raw))),
             "junk.xz": b"\xfd7zXZ\x00" + bytes(40)}
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(DataError, match=f"cannot read .*{name}"):
            read_idx(tmp_path / name)


@pytest.mark.parametrize("images,labels,what", [
    (np.zeros((20, 784), np.uint8), None, "images must be (N, H, W)"),
    (np.zeros((20, 0, 28), np.uint8), None, "images must be (N, H, W)"),
    (None, np.zeros((20, 2), np.uint8), "labels must be (N,)"),
    (None, np.arange(19) % 10, "holds 20 images, but"),
])
def test_idx_arrays_of_the_wrong_shape_are_refused(tmp_path, images, labels, what):
    write_mnist(tmp_path, images, labels)
    with pytest.raises(DataError) as e:
        load_mnist(tmp_path)
    assert what in str(e.value) and str(tmp_path) in str(e.value), str(e.value)


def test_test_images_of_another_size_are_refused(tmp_path):
    write_mnist(tmp_path)
    write_idx(tmp_path / "t10k-images-idx3-ubyte", np.zeros((5, 32, 32), np.uint8))
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.zeros(5, np.uint8))
    with pytest.raises(DataError, match=r"t10k-images-idx3-ubyte holds images of \(32, 32\) px"):
        load_mnist(tmp_path)


def test_idx_labels_beyond_the_class_count(tmp_path):
    write_mnist(tmp_path, labels=(np.arange(20) % 10).astype(np.uint8) + np.uint8(3))
    with pytest.raises(DataError, match=rf"{LABELS} has label 12, but there are 10 classes"):
        load_mnist(tmp_path)


# ---------------------------------------------------------------------------------------------------------
# CIFAR pickles

CIFAR_FILES = [f"data_batch_{i}" for i in range(1, 6)]


def write_cifar(folder: Path, batch: dict | None = None, broken: str = "data_batch_3") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for name in CIFAR_FILES:
        b = {b"data": rng.integers(0, 256, (4, 3072), dtype=np.uint8), b"labels": [0, 1, 2, 3]}
        (folder / name).write_bytes(pickle.dumps(batch if batch is not None and name == broken else b))
    return folder


def load_cifar10(folder: Path):
    from hpsearch.data.cifar import load_cifar

    return load_cifar("cifar10", str(folder), download=False)


@pytest.mark.parametrize("batch,what", [
    ({b"data": ["a"] * 4, b"labels": [0, 1, 2, 3]}, "data has shape (4,)"),
    ({b"data": np.zeros((4, 100), np.uint8), b"labels": [0, 1, 2, 3]}, "CIFAR rows are 3072 bytes"),
    ({b"data": np.full((4, 3072), 300), b"labels": [0, 1, 2, 3]}, "CIFAR pixels are bytes"),
    ({b"data": np.zeros((4, 3072), np.uint8), b"labels": 7}, "labels are N integers"),
    ({b"data": np.zeros((4, 3072), np.uint8), b"labels": ["cat"] * 4}, "labels are N integers"),
    ({b"data": np.zeros((4, 3072), np.uint8), b"labels": [0, 1]}, "holds 4 images but 2 labels"),
    ({b"data": [[1, 2], [3]], b"labels": [0]}, "is not an array"),
    ({b"labels": [0]}, "lacks 'data'"),
])
def test_malformed_cifar_batch_names_the_file_and_the_fault(tmp_path, batch, what):
    write_cifar(tmp_path, batch)
    with pytest.raises(DataError) as e:
        load_cifar10(tmp_path)
    assert str(tmp_path / "data_batch_3") in str(e.value) and what in str(e.value), str(e.value)


def test_corrupt_cifar_pickles_are_data_errors(tmp_path):
    """Truncations and flipped bytes of a real batch: pickle fails in many ways (UnpicklingError, EOFError,
    IndexError, MemoryError, a key that is not UTF-8, ...); every one is a DataError naming the file."""
    good = pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 1]})
    rng = np.random.default_rng(0)
    truncated = [good[:n] for n in range(0, len(good), 97)]
    variants = list(truncated)
    for _ in range(300):  # flips in the opcodes and the array header (the rest is pixel bytes)
        b = bytearray(good)
        for i in rng.integers(0, 200, rng.integers(1, 5)):
            b[i] = int(rng.integers(0, 256))
        variants.append(bytes(b))
    variants.append(pickle.dumps({b"\xff\xfe": 1}))  # a key that is not UTF-8
    p = tmp_path / "data_batch_1"
    errors = 0
    for v in variants:  # each loads or is a DataError; any other exception fails the test
        p.write_bytes(v)
        try:
            safe_unpickle(p)
        except DataError as e:
            assert str(p) in str(e) and "\n" not in str(e)
            errors += 1
    assert errors >= len(truncated), "every truncated file is refused"


def test_cifar_labels_beyond_the_class_count(tmp_path):
    write_cifar(tmp_path, {b"data": np.zeros((4, 3072), np.uint8), b"labels": [0, 1, 2, 10]})
    with pytest.raises(DataError, match=r"a train label is 10, but cifar10 has 10 classes"):
        load_cifar10(tmp_path)
    write_cifar(tmp_path, {b"data": np.zeros((4, 3072), np.uint8), b"labels": [0, 1, 2, -1]})
    with pytest.raises(DataError, match=r"a train label is -1"):
        load_cifar10(tmp_path)


# ---------------------------------------------------------------------------------------------------------
# ImageFolder and its cache


def write_tree(root: Path, content: bytes | None = None) -> Path:
    """root/train/<class>/*.png; ``content`` replaces every file's bytes (None: real PNGs)."""
    from PIL import Image

    for c in ("cat", "dog"):
        d = root / "train" / c
        d.mkdir(parents=True)
        for i in range(3):
            p = d / f"{i}.png"
            if content is None:
                Image.new("RGB", (12, 10), (i * 40, 90, 200)).save(p)
            else:
                p.write_bytes(content)
    return root


@pytest.mark.parametrize("content", [b"", b"not an image at all", b"\x89PNG\r\n\x1a\n" + bytes(30)],
                         ids=["empty", "text", "truncated-png"])
def test_imagefolder_of_unreadable_files_is_a_data_error(tmp_path, monkeypatch, content):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # the automatic cache goes under ~/.cache
    root = write_tree(tmp_path / "tree", content)
    spec = DataSpec("imagefolder", root=str(root), image_size=16)
    with pytest.raises(DataError) as e:
        load_dataset(spec, seed=0)
    msg = str(e.value)
    assert str(root) in msg and "unreadable" in msg and "\n" not in msg, msg


def test_cache_labels_beyond_the_class_count(tmp_path):
    root = write_tree(tmp_path / "tree")
    info = prepare_cache(root, tmp_path / "cache", size=8, progress=False)
    y = np.load(info.path / "train_y.npy")
    y[0] = 7
    np.save(info.path / "train_y.npy", y)
    with pytest.raises(DataError, match=r"train_y.npy has a label outside 0..1, but there are 2 classes"):
        load_cache(info.path)


# ---------------------------------------------------------------------------------------------------------
# Images smaller than the model's minimum


def test_images_smaller_than_the_model_minimum_name_model_and_size():
    with pytest.raises(SpecError, match=r"images are 16 px, but lenet needs at least 28 px"):
        create_model("lenet", 10, 1, image_size=16)
    with pytest.raises(SpecError, match=r"images are 32 px, but tv:alexnet needs at least 63 px"):
        create_model("tv:alexnet", 10, 3, image_size=32)


@pytest.mark.parametrize("data,space,needle", [
    ({"image_size": 16}, {"arch": "lenet"}, "`data.image_size` is 16 px, but `space.arch` 'lenet'"),
    ({"dataset": "cifar10"}, {"arch": ["lenet", "tv:alexnet"]},
     "cifar10 images are 32 px, but `space.arch` 'tv:alexnet'"),
    ({"dataset": "mnist"}, {"arch": "vgg", "image_size": [16, 32]}, "`space.image_size` allows 16 px"),
], ids=["synthetic", "cifar-alexnet", "fidelity"])
@pytest.mark.slow
def test_validate_refuses_images_smaller_than_an_arch_accepts(tmp_path, data, space, needle):
    """Caught when the study file is checked: not a torch shape error deep in every trial."""
    spec = write_study(tmp_path / "study.toml", data=data, space=space)
    r = run_cli("validate", str(spec))
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.returncode == 2 and len(lines) == 1 and needle in lines[0], r.stderr


# ---------------------------------------------------------------------------------------------------------
# Folders this process may not read. Root ignores file modes through two capabilities (CAP_DAC_OVERRIDE,
# CAP_DAC_READ_SEARCH), so as root the loader runs in a child process that dropped them before exec: it is
# still root, but "chmod 000" then stops it as it would stop any user.

LOAD = """
import sys
from hpsearch.data import load_dataset
from hpsearch.errors import DataError
from hpsearch.spec import DataSpec
kind, folder = sys.argv[1], sys.argv[2]
spec = DataSpec(kind, root=folder, val_size=4) if kind == "imagefolder" else DataSpec(kind, val_size=4)
try:
    load_dataset(spec, seed=0, data_dir=None if kind == "imagefolder" else folder)
except DataError as e:
    print(e)
    sys.exit(3)
"""
PR_CAPBSET_DROP, CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH = 24, 1, 2  # <linux/prctl.h>, <linux/capability.h>


def _drop_file_capabilities() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH):
        if libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def load_without_permission(kind: str, folder: Path, tmp_path: Path) -> subprocess.CompletedProcess:
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(home), "PYTHONWARNINGS": "ignore"}
    cmd = [sys.executable, "-c", LOAD, kind, str(folder)]
    if os.geteuid() != 0:
        return subprocess.run(cmd, env=env, text=True, capture_output=True, timeout=300)
    try:
        return subprocess.run(cmd, env=env, text=True, capture_output=True, timeout=300,
                              preexec_fn=_drop_file_capabilities)
    except subprocess.SubprocessError as e:  # no CAP_SETPCAP (a restricted container): chmod cannot stop root
        pytest.skip(f"running as root without the right to drop CAP_DAC_OVERRIDE ({e}): file modes cannot be "
                    "tested")


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["mnist", "cifar10", "imagefolder"])
def test_unreadable_data_folder_says_permission_denied(tmp_path, kind):
    writer = {"mnist": write_mnist, "cifar10": write_cifar, "imagefolder": write_tree}[kind]
    folder = writer(tmp_path / "data")
    folder.chmod(0o000)
    try:
        r = load_without_permission(kind, folder, tmp_path)
    finally:
        folder.chmod(0o755)
    assert r.returncode == 3, (r.returncode, r.stdout, r.stderr)
    assert f"{folder}: permission denied" in r.stdout, r.stdout


@pytest.mark.slow
def test_unreadable_idx_file_names_it(tmp_path):
    folder = write_mnist(tmp_path / "data")
    (folder / IMAGES).chmod(0o000)
    r = load_without_permission("mnist", folder, tmp_path)
    assert r.returncode == 3 and f"cannot read {folder / IMAGES}" in r.stdout and "Permission denied" in r.stdout, (
        r.stdout, r.stderr)


# ---------------------------------------------------------------------------------------------------------
# Through the CLI


@pytest.mark.slow
def test_cli_run_on_a_damaged_dataset_exits_2_with_one_error_line(tmp_path):
    data = write_mnist(tmp_path / "mnist")
    (data / IMAGES).write_bytes(idx_header(20, 28, 28) + bytes(50))
    spec = write_study(tmp_path / "study.toml", name="bad-data", n_trials=1,
                       data={"dataset": "mnist", "val_size": 4})
    r = run_cli("run", str(spec), "--storage", f"sqlite:///{tmp_path}/s.db", "--data-dir", str(data),
                "--artifacts", str(tmp_path / "art"), cwd=tmp_path, env={"HPSEARCH_DATA": ""})
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert len(lines) == 1 and str(data / IMAGES) in lines[0] and "truncated or padded" in lines[0], r.stderr
    assert not (tmp_path / "s.db").exists(), "bad data is found before the study is created"
