"""hpsearch installed as a user installs it: a wheel of the checkout (not an editable install) goes into a fresh
virtual environment, and from a folder outside the checkout its `hpsearch` console script runs a study, writes
the report with the default layout, exports the trials and serves the dashboard. A file the package reads at
run time that the wheel lacks (a layout, the embedded sample) fails here, not on a user's machine.

Torch and the other dependencies are not installed again: the wheel goes in with ``--no-deps`` and a ``.pth``
line makes the test venv's site-packages importable after the fresh venv's own. A ``.pth`` line only appends
a path, it does not run that folder's ``.pth`` files, so the test venv's editable hpsearch stays out of reach
(asserted below: ``import hpsearch`` must resolve inside the fresh venv).
"""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
from browser import running_dashboard

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
STUDY = "wheel"


def study_text(name: str) -> str:
    """Two trials of LeNet on 200 two-class 28 px synthetic images, one epoch each (about a second a trial)."""
    return f"""
[study]
name = "{name}"
seed = 0
n_trials = 2

[data]
dataset = "synthetic"
image_size = 28
channels = 1
num_classes = 2
n_images = 200

[train]
max_epochs = 1
eval_every = 0.5
device = "cpu"

[sampler]
name = "random"

[pruner]
name = "none"

[space]
arch = "lenet"
lr = {{ low = 1e-3, high = 0.01, log = true }}
batch_size = 32
optimizer = "adamw"
"""


def checkout_files() -> list[str]:
    """The checkout's files as a clone plus its new, not ignored files would hold them (no build/, no egg-info,
    no .venv): a wheel built in place would pick up stale files from an earlier build's build/lib."""
    out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout
    return [f for f in out.split("\0") if f and (ROOT / f).is_file()]


def sh(*cmd: str | Path, cwd: Path, timeout: float = 300, env: dict | None = None) -> subprocess.CompletedProcess:
    r = subprocess.run([str(c) for c in cmd], cwd=cwd, capture_output=True, text=True, timeout=timeout,
                       env=os.environ | {"PYTHONWARNINGS": "ignore"} | (env or {}))
    assert r.returncode == 0, f"{' '.join(map(str, cmd))} exited {r.returncode}:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """A wheel built from a copy of the checkout's files, without build isolation (no index needed)."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    for f in checkout_files():
        (src / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / f, src / f)
    sh(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", tmp / "dist", src,
       cwd=tmp)
    (path,) = (tmp / "dist").glob("hpsearch-*.whl")
    return path


@pytest.fixture(scope="module")
def venv(wheel, tmp_path_factory) -> Path:
    """A fresh venv holding the wheel; the test venv's site-packages follow its own on sys.path."""
    venv = tmp_path_factory.mktemp("fresh") / "venv"
    sh(sys.executable, "-m", "venv", "--without-pip", venv, cwd=venv.parent)
    py = venv / "bin" / "python"
    # pip of the test venv installs into the fresh one (--python); before the .pth exists, so pip sees no
    # hpsearch there and would not try to uninstall the editable one of the test venv
    sh(sys.executable, "-m", "pip", "--python", py, "install", "--no-deps", "-q", wheel, cwd=venv.parent)
    site = Path(sh(py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])", cwd=venv.parent)
                .stdout.strip())
    ours = dict.fromkeys([sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]])
    (site / "zz_test_venv.pth").write_text("".join(f"{p}\n" for p in ours))
    return venv


def test_the_wheel_holds_every_package_file_of_the_checkout(wheel):
    """Every file under hpsearch/ in the checkout (modules, layouts, the embedded sample) is in the wheel."""
    names = set(zipfile.ZipFile(wheel).namelist())
    package = [f for f in checkout_files() if f.startswith("hpsearch/")]
    assert "hpsearch/inspect/layouts/overview.toml" in package
    assert sorted(set(package) - names) == []


def test_installed_wheel_runs_reports_exports_and_serves(venv, tmp_path):
    """Through the fresh venv's console script, from a folder outside the checkout: run, report, export and
    dashboard all work; the sample data loads from the installed package."""
    bin_ = venv / "bin"
    work = tmp_path / "work"
    work.mkdir()
    where = sh(bin_ / "python", "-c", "import hpsearch; print(hpsearch.__file__)", cwd=work).stdout.strip()
    assert Path(where).is_relative_to(venv), f"hpsearch imported from {where}, not from the fresh venv {venv}"

    (work / "study.toml").write_text(study_text(STUDY))
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    sh(bin_ / "hpsearch", "run", "study.toml", "--storage", storage, cwd=work)

    out = sh(bin_ / "hpsearch", "report", "--storage", storage, "--study", STUDY, cwd=work).stdout
    html = work / "dashboards" / f"{STUDY}.html"
    assert f"wrote {html.relative_to(work)}" in out or str(html) in out, out
    assert STUDY in html.read_text() and "plotly" in html.read_text()

    sh(bin_ / "hpsearch", "export", "--storage", storage, "--study", STUDY, "-o", "x.csv", cwd=work)
    with open(work / "x.csv", newline="") as f:
        assert [row["state"] for row in csv.DictReader(f)] == ["COMPLETE", "COMPLETE"]

    sample = sh(bin_ / "python", "-c", "from hpsearch.data.mnist import load_sample; a, _ = load_sample(); "
                "print(len(a['train_images']), len(a['test_images']))", cwd=work).stdout.split()
    assert sample == ["4500", "500"]

    with running_dashboard(storage, None, work, hpsearch=(str(bin_ / "hpsearch"),)) as dash:
        assert [st["study_name"] for st in dash.studies] == [STUDY]


def test_installed_wheel_fine_tunes_and_deploys_with_the_extras(venv, tmp_path, lite0_weights_dir):
    """The optional extras' code paths through the installed wheel: a timm model with pretrained weights from a
    weights_dir (the timm extra), retrained to a model file, exported to ONNX and run by onnxruntime (the onnx
    extra). Skipped, saying which, only where an extra is not installed."""
    import importlib.util

    missing = [m for m in ("timm", "onnx", "onnxruntime") if importlib.util.find_spec(m) is None]
    if missing:
        pytest.skip(f"not installed: {', '.join(missing)} (pip install 'hpsearch[timm,onnx]')")
    bin_ = venv / "bin"
    work = tmp_path / "work"
    work.mkdir()
    text = study_text("ft").replace('arch = "lenet"', 'arch = "timm:efficientnet_lite0"')
    text = text.replace('device = "cpu"', f'device = "cpu"\npretrained = true\nweights_dir = "{lite0_weights_dir}"')
    (work / "study.toml").write_text(text.replace("n_trials = 2", "n_trials = 1"))
    storage = f"sqlite:///{tmp_path / 'ft.db'}"
    sh(bin_ / "hpsearch", "run", "study.toml", "--storage", storage, "--offline", cwd=work)
    sh(bin_ / "hpsearch", "retrain", "--storage", storage, "--study", "ft", "--epochs", "1", "-o", "m.pt", cwd=work)
    out = sh(bin_ / "hpsearch", "export-model", "--model", "m.pt", "-o", "m.onnx", cwd=work).stderr
    assert "wrote m.onnx" in out, out
