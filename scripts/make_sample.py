"""Builds the embedded Fashion-MNIST sample shipped in ``hpsearch/data/_sample/`` from the real IDX files.

    python scripts/make_sample.py [--src /usr/share/datasets/fashion-mnist]

Takes a class-balanced, seeded subset (450 training and 50 test images per class) and writes it as
xz-compressed IDX files, about 1.9 MB in all, so the quickstart runs on a fresh machine with no download.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from hpsearch.data.idx import read_idx, write_idx

OUT = Path(__file__).resolve().parent.parent / "hpsearch" / "data" / "_sample"


def balanced(labels: np.ndarray, per_class: int, rng: np.random.Generator) -> np.ndarray:
    idx = [rng.choice(np.flatnonzero(labels == c), per_class, replace=False) for c in range(10)]
    return rng.permutation(np.concatenate(idx))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--src", default="/usr/share/datasets/fashion-mnist")
    args = ap.parse_args()
    src = Path(args.src)
    rng = np.random.default_rng(20261126)
    OUT.mkdir(parents=True, exist_ok=True)
    for split, prefix, per_class in (("train", "train", 450), ("test", "t10k", 50)):
        x = read_idx(src / f"{prefix}-images-idx3-ubyte.gz")
        y = read_idx(src / f"{prefix}-labels-idx1-ubyte.gz")
        keep = balanced(y, per_class, rng)
        write_idx(OUT / f"{prefix}-images-idx3-ubyte.xz", x[keep])
        write_idx(OUT / f"{prefix}-labels-idx1-ubyte.xz", y[keep])
        print(f"{split}: {len(keep)} images")
    total = sum(f.stat().st_size for f in OUT.iterdir())
    print(f"wrote {OUT} ({total / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
