"""In a real browser: the HTML report of a small study and a running `hpsearch dashboard` render, show the study
name, the metric `val_top1` and plots, and raise no JavaScript error. Screenshots go to a temporary folder."""

from __future__ import annotations

from pathlib import Path

import pytest
from browser import CHROMIUM, Browser, running_dashboard
from conftest import run_cli
from PIL import Image
from services import unavailable

from studies import PRUNED, write_study

pytestmark = pytest.mark.browser

NAME = "browser-study"
# plotly draws each figure into a .plot-container holding svg.main-svg layers (the report and optuna-dashboard)
COUNTS = {"plots": "document.querySelectorAll('.plot-container').length",
          "svgs": "document.querySelectorAll('svg.main-svg').length"}


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).is_file():
        unavailable(f"{CHROMIUM} is missing (apt-get install chromium)")
    with Browser() as b:
        yield b


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """A small study run through the real CLI (synthetic images, 4 tiny trials) with an artifact store."""
    tmp = tmp_path_factory.mktemp("browser")
    spec = write_study(tmp / "s.toml", PRUNED, name=NAME, n_trials=4,
                       space={"lr": {"low": 1e-3, "high": 0.05, "log": True}})
    db = f"sqlite:///{tmp / 'db.sqlite'}"
    r = run_cli("run", str(spec), "--storage", db, "--artifacts", str(tmp / "art"), cwd=tmp)
    assert r.returncode == 0, r.stderr[-2000:]
    return tmp, db


def check_png(data: bytes, path: Path) -> None:
    path.write_bytes(data)
    with Image.open(path) as img:
        assert img.format == "PNG" and img.size[0] == 1280 and img.size[1] >= 600, "a screenshot of the page"


def test_report_renders_without_javascript_errors(study, browser, tmp_path):
    tmp, db = study
    html = tmp / "report.html"
    r = run_cli("report", "--storage", db, "--study", NAME, "-o", str(html), cwd=tmp)
    assert r.returncode == 0, r.stderr
    page = browser.open(html.as_uri(), until=f"{COUNTS['svgs']} > 0 && {COUNTS['plots']} >= 8", values=COUNTS,
                        full_page=True)
    assert page.errors == [], "the report raises no JavaScript error"
    assert f"Study {NAME}" in page.text and "val_top1" in page.text, "header names the study and the metric"
    assert "Top 3 trials" in page.text, "the leaderboard lists the completed trials"
    assert page.values["plots"] >= 8, "history, anytime, curves, savings, importance, parallel, slice, arch drawn"
    check_png(page.screenshot, tmp_path / "report.png")


def test_dashboard_renders_without_javascript_errors(study, browser, tmp_path):
    tmp, db = study
    with running_dashboard(db, tmp / "art", tmp) as dash:
        base, sid = dash.base, dash.study_id(NAME)

        # the study page: history plot of val_top1, importance and timeline (React renders after load)
        page = browser.open(f"{base}/dashboard/studies/{sid}", values=COUNTS, settle=1.5,
                            until=f"document.body.innerText.includes('val_top1') && {COUNTS['svgs']} > 0")
        assert page.errors == [], "optuna-dashboard raises no JavaScript error on the study page"
        assert NAME in page.text and "val_top1" in page.text, "the study name and metric are shown"
        assert page.values["plots"] >= 1 and page.values["svgs"] >= 1, "at least one plot is drawn"
        check_png(page.screenshot, tmp_path / "dashboard-study.png")

        # a trial page: the note, the learning curve values and the artifacts (images served by our store)
        imgs = "[...document.querySelectorAll('img')].filter(i => i.src.includes('/artifacts/'))"
        page = browser.open(f"{base}/dashboard/studies/{sid}/trials", settle=1.0,
                            values={"loaded": f"{imgs}.filter(i => i.complete && i.naturalWidth > 0).length"},
                            until=f"{imgs}.length > 0 && {imgs}.every(i => i.complete)")
        assert page.errors == [], "optuna-dashboard raises no JavaScript error on the trials page"
        assert "val Top-1" in page.text, "the trial's markdown note is rendered"
        assert "augmentation_preview.png" in page.text and "confusion_matrix.png" in page.text
        assert page.values["loaded"] >= 2, "the artifact images load from the artifact store"
        check_png(page.screenshot, tmp_path / "dashboard-trial.png")
