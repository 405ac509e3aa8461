"""README screenshots of the HTML report and of optuna-dashboard, taken by the browser test's code path.

    python scripts/screenshots.py [--spec studies/quickstart.toml] [--n-trials N] [--out docs/img]

Runs the study through the real CLI (``hpsearch run``) into a temporary SQLite file and artifact store, writes
``hpsearch report``, starts ``hpsearch dashboard`` on a free 127.0.0.1 port, and opens both in headless
Chromium with ``tests/browser.py`` (the module ``tests/scenarios/test_browser.py`` uses). Writes
``report.png`` (the top of the report: header, leaderboard, history, anytime curve, learning curves) and
``dashboard.png`` (the best trial's page: note, learning-curve values, attributes and its artifacts:
augmentation preview, confusion matrix). Fails, like the test, if a page raises a JavaScript error. Needs
/usr/bin/chromium.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import tomllib
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from browser import Browser, running_dashboard  # noqa: E402

ENV = os.environ | {"PYTHONWARNINGS": "ignore"}


def hpsearch(*args: str, cwd: Path) -> None:
    r = subprocess.run([sys.executable, "-m", "hpsearch.cli", *args], cwd=cwd, env=ENV, text=True,
                       capture_output=True)
    if r.returncode != 0:
        sys.exit(f"hpsearch {args[0]} failed (exit {r.returncode}): {r.stderr.strip()[-2000:]}")


def no_errors(page, what: str) -> None:
    if page.errors:
        sys.exit(f"{what}: JavaScript errors: {page.errors}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--spec", type=Path, default=ROOT / "studies" / "quickstart.toml")
    ap.add_argument("--n-trials", type=int, default=None, help="override the spec's n_trials")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "img")
    args = ap.parse_args()
    name = tomllib.loads(args.spec.read_text())["study"]["name"]
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        db, art = "sqlite:///study.db", "artifacts"  # relative to tmp (every command runs there): a short header
        t = time.perf_counter()
        hpsearch("run", str(args.spec.resolve()), "--storage", db, "--artifacts", art, "--device", "cpu",
                 *(["--n-trials", str(args.n_trials)] if args.n_trials else []), cwd=tmp)
        print(f"study {name}: ran in {time.perf_counter() - t:.0f} s")
        hpsearch("report", "--storage", db, "--study", name, "-o", str(tmp / "report.html"), cwd=tmp)

        with Browser() as browser:
            page = browser.open((tmp / "report.html").as_uri(), size=(1280, 900), full_page=True, max_height=2400,
                                until="document.querySelectorAll('svg.main-svg').length > 0")
            no_errors(page, "report")
            (args.out / "report.png").write_bytes(page.screenshot)

            with running_dashboard(db, art, tmp) as dash:
                sid = dash.study_id(name)
                best = json.load(urllib.request.urlopen(f"{dash.base}/api/studies/{sid}", timeout=30))["best_trials"][0]
                imgs = "[...document.querySelectorAll('img')].filter(i => i.src.includes('/artifacts/'))"
                # tall enough for the whole trial pane: note, values, parameters, attributes, artifacts
                page = browser.open(f"{dash.base}/dashboard/studies/{sid}/trials?numbers={best['number']}",
                                    size=(1440, 1850), settle=1.5,
                                    until=f"{imgs}.length > 0 && {imgs}.every(i => i.complete)")
                no_errors(page, "dashboard")
                (args.out / "dashboard.png").write_bytes(page.screenshot)
    for f in ("report.png", "dashboard.png"):
        print(f"wrote {args.out / f} ({(args.out / f).stat().st_size / 1e3:.0f} kB)")


if __name__ == "__main__":
    main()
