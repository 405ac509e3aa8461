"""Checks that the training tests can fail: applies each deliberate bug as a source patch, runs the tests that
must catch it, and prints a table of bug → result, where every bug must read FAILED (issue 19, "Equivalence tests
that can fail").

    .venv/bin/python scripts/deliberate_bugs.py          # the unpatched code, then every bug
    .venv/bin/python scripts/deliberate_bugs.py a e      # the unpatched code, then bugs a and e
    .venv/bin/python scripts/deliberate_bugs.py --all    # every test each bug fails, not only the first

A bug is a string replacement in one source file. The patches go into a scratch copy of the working tree
(``hpsearch/``, ``tests/``, ``pyproject.toml``), one at a time, each restored in ``finally`` before the next, so
the checkout (and a test run someone else has going in it) never sees a patched file. Each run is
``python -m pytest -x`` on the bug's selection in a subprocess in that copy (``--all``: without ``-x``, listing
every test the bug fails). The unpatched code runs every selection first and must pass. Exit status 0 when it
passes and every bug fails a test.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LOOP, PACK, CHECKPOINT = "hpsearch/training/loop.py", "hpsearch/training/pack.py", "hpsearch/training/checkpoint.py"
PACK_TESTS, LOOP_TESTS = "tests/training/test_pack.py", "tests/training/test_loop.py"


@dataclass(frozen=True)
class Bug:
    key: str
    what: str
    path: str  # relative to the repository root
    old: str  # must occur exactly once in the file
    new: str
    tests: tuple[str, ...]  # pytest arguments: files, node ids, -k expressions


BUGS = [
    Bug("a", "every pack member gets member 0's weight decay", PACK,
        "[c.weight_decay for c in cfgs]", "[first.weight_decay for c in cfgs]", (PACK_TESTS,)),
    Bug("b", "packs ignore weight decay", PACK,
        "self.decayed = bool(decays.any()) and bool(self.wd.any())", "self.decayed = False", (PACK_TESTS,)),
    Bug("c", "a checkpoint loses the optimizer state (the restored optimizer stays fresh)", CHECKPOINT,
        '"optimizer": optimizer,', '"optimizer": {**optimizer, "state": {}},',
        (PACK_TESTS, LOOP_TESTS, "-k", "resume")),
    Bug("c2", "a pack member's checkpoint has no optimizer buffers", PACK,
        "state = {key: self.model.view(t) for key, t in self.state.items()}", "state = {}", (PACK_TESTS,)),
    Bug("d", "fit's epoch loop skips a batch (the 4th of each epoch)", LOOP,
        "            if b < skip:", "            if b < skip or b == 3:", (PACK_TESTS, LOOP_TESTS)),
    Bug("e", "Adam moments dropped on pack resume", PACK,
        '                if key == "step":',
        '                if key.startswith("exp_avg"):\n                    continue\n                if key == "step":',
        (PACK_TESTS, "-k", "resume")),
    Bug("f", "a pack's mid-epoch resume restarts the epoch (the skip is ignored)", PACK,
        "skip = start.batch if epoch == start.epoch else 0", "skip = 0", (PACK_TESTS, "-k", "resume")),
    Bug("f2", "fit's mid-epoch resume restarts the epoch (the skip is ignored)", LOOP,
        "skip = start.batch if epoch == start.epoch else 0", "skip = 0", (PACK_TESTS, LOOP_TESTS, "-k", "resume")),
    Bug("g", "every pack member gets member 0's learning rate", PACK,
        "[c.lr for c in cfgs]", "[first.lr for c in cfgs]", (PACK_TESTS,)),
    Bug("h", "every pack member gets member 0's label smoothing", PACK,
        "[c.label_smoothing for c in cfgs]", "[first.label_smoothing for c in cfgs]", (PACK_TESTS,)),
    Bug("i", "a mid-epoch checkpoint keeps the data order as it is now, not as the epoch began", CHECKPOINT,
        '"rng_perm": epoch_perm if mid else g_perm.get_state()', '"rng_perm": g_perm.get_state()',
        (PACK_TESTS, LOOP_TESTS, "-k", "resume")),
    Bug("j", "resume leaves the augmentation generator as it was", CHECKPOINT,
        "    g_aug.set_state(", "    0 and g_aug.set_state(", (PACK_TESTS, LOOP_TESTS, "-k", "resume")),
]


def pytest(copy: Path, args: tuple[str, ...], first_only: bool) -> tuple[str, str, float]:
    """Runs pytest in ``copy`` (stopping at the first failure when ``first_only``): (PASSED | FAILED | ERROR, the
    failing tests or the error's last line, seconds)."""
    t0 = time.perf_counter()
    env = os.environ | {"PYTHONPATH": str(copy), "PYTHONWARNINGS": "ignore"}
    r = subprocess.run([sys.executable, "-m", "pytest", *(("-x",) if first_only else ()), "-q", "-p",
                        "no:cacheprovider", "-m", "not slow", *args], cwd=copy, env=env, capture_output=True,
                       text=True, timeout=1800)
    seconds = time.perf_counter() - t0
    if r.returncode == 0:
        return "PASSED", "", seconds
    failed = re.findall(r"^FAILED \S+::(\S+)", r.stdout, re.MULTILINE)
    if r.returncode in (1, 2) and failed:  # 2: pytest-xdist's -x ends the session as interrupted
        return "FAILED", ", ".join(failed), seconds
    tail = (r.stdout + r.stderr).strip().splitlines()
    return "ERROR", tail[-1] if tail else f"exit status {r.returncode}", seconds


def scratch_copy(dest: Path) -> None:
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("hpsearch", "tests"):
        shutil.copytree(ROOT / name, dest / name, ignore=ignore)
    shutil.copy2(ROOT / "pyproject.toml", dest / "pyproject.toml")


def imports_the_copy(copy: Path) -> bool:
    """The copy's ``hpsearch`` is the one its tests import (not the checkout's editable install)."""
    r = subprocess.run([sys.executable, "-c", "import hpsearch; print(hpsearch.__file__)"], cwd=copy,
                       env=os.environ | {"PYTHONPATH": str(copy)}, capture_output=True, text=True)
    return Path(r.stdout.strip()).resolve().is_relative_to(copy.resolve())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("bugs", nargs="*", help=f"bug keys (default: all of {', '.join(b.key for b in BUGS)})")
    ap.add_argument("--all", action="store_true", help="list every test a bug fails (slower: no -x)")
    args = ap.parse_args()
    unknown = set(args.bugs) - {b.key for b in BUGS}
    if unknown:
        ap.error(f"unknown bug {', '.join(sorted(unknown))}; the bugs are {', '.join(b.key for b in BUGS)}")
    bugs = [b for b in BUGS if not args.bugs or b.key in args.bugs]
    rows = []
    with tempfile.TemporaryDirectory(prefix="deliberate-bugs-") as tmp:
        copy = Path(tmp)
        scratch_copy(copy)
        if not imports_the_copy(copy):
            print("the scratch copy's tests would import the checkout's hpsearch; nothing was run", file=sys.stderr)
            return 2
        selection = sorted({a for b in bugs for a in b.tests if a.startswith("tests/")})
        result, detail, seconds = pytest(copy, tuple(selection), first_only=True)
        rows.append(("-", "none (the code as it is)", " ".join(selection), result, detail, seconds, "PASSED"))
        print(f"{rows[-1][1]}: {result} {detail} ({seconds:.0f} s)", flush=True)
        for bug in bugs:
            path = copy / bug.path
            source = path.read_text()
            if source.count(bug.old) != 1:
                rows.append((bug.key, bug.what, bug.path, "NOT APPLIED",
                             f"{bug.old!r} occurs {source.count(bug.old)} times", 0.0, "FAILED"))
                continue
            try:
                path.write_text(source.replace(bug.old, bug.new))
                result, detail, seconds = pytest(copy, bug.tests, first_only=not args.all)
            finally:
                path.write_text(source)
            rows.append((bug.key, bug.what, " ".join(bug.tests), result, detail, seconds, "FAILED"))
            print(f"{bug.key}: {result} {detail} ({seconds:.0f} s)", flush=True)
    failing = "failing tests" if args.all else "first failing test"
    print(f"\n| bug | what | tests run | result | {failing} | s |\n|---|---|---|---|---|---|")
    for key, what, tests, result, detail, seconds, _ in rows:
        print(f"| {key} | {what} | `{tests}` | {result} | {detail and f'`{detail}`'} | {seconds:.0f} |")
    wrong = [row[0] for row in rows if row[3] != row[6]]
    if wrong:
        print(f"\nnot as expected: {', '.join(wrong)} (the unpatched code must pass and every bug fail)")
    return 1 if wrong else 0


if __name__ == "__main__":
    sys.exit(main())
