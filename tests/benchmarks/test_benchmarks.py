"""Smoke runs of the benchmarks' --quick modes: they run and write valid JSON (no timing is asserted)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from hpsearch.spec import load_spec

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow

BENCHMARKS = ["loop_throughput", "imagefolder_cache", "overhead", "report_scale", "storage_scale",
              "search_value", "gpu_airbench", "transfer", "short_schedule"]
ALONE = ("search_value", "transfer")  # their arms train for a fixed wall budget: they run alone, one after another
# data that every machine has: the embedded sample and generated images (a named dataset is never swapped)
# the peer tuners (Syne Tune, Ray Tune) come from the `bench` extra: smoke-tested where it is installed (CI installs
# it: .ci/run), said skipped elsewhere
PEERS_INSTALLED = all(importlib.util.find_spec(m) is not None for m in ("syne_tune", "ray"))
# the smoke set (issue 21: default, random, syne-asha, ray-asha; syne-mobster is gone from Syne Tune 0.16 and
# refused, tested below). syne-bohb (syne-asha's driver with another scheduler) and ray-user (ray-asha's driver with
# the hand-written loop, whose training tests/benchmarks/test_peers.py runs) would add a third 20 s group of two arms,
# about 45 core-seconds of CI, so they are left to the full runs
PEER_ARMS = ["syne-asha", "ray-asha"] if PEERS_INSTALLED else []
SEARCH_ARMS = ["default", "random", *PEER_ARMS]
# transfer's random_init arm is the pretrained arm's study with pretrained = false (the "random" weights a trial
# records are tested in tests/models/test_weights.py): the smoke runs the two arms that differ in code
TRANSFER_ARMS = ["pretrained", "scratch"]
QUICK_ARGS = {"loop_throughput": ["--dataset", "fashion-mnist-sample,synthetic-cifar"],
              # two arms at a time, one core each, as the full benchmark runs them
              "search_value": ["--keep", "keep", "--arms", ",".join(SEARCH_ARMS), "--side-by-side", "2"],
              "transfer": ["--arms", ",".join(TRANSFER_ARMS), "--side-by-side", "2"]}


def load_benchmark(name: str):
    """A benchmark script as a module (its folder on the path, for its ``_common`` and sibling imports)."""
    if str(ROOT / "benchmarks") not in sys.path:
        sys.path.insert(0, str(ROOT / "benchmarks"))
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_benchmark(name: str, args: list[str], tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    env = os.environ | {"HPSEARCH_BENCH_RESULTS": str(tmp_path / "results")} | env
    return subprocess.run([sys.executable, str(ROOT / "benchmarks" / f"{name}.py"), *args], capture_output=True,
                          text=True, timeout=600, env=env, cwd=tmp_path)


# scripts whose --quick smoke test lives in a test module of their own
TESTED_ELSEWHERE = {"pack_throughput": "tests/benchmarks/test_pack_benchmark.py"}


def test_every_benchmark_script_is_smoke_tested():
    scripts = {p.stem for p in (ROOT / "benchmarks").glob("*.py") if not p.stem.startswith("_")}
    elsewhere = {name for name in scripts & set(TESTED_ELSEWHERE) if (ROOT / TESTED_ELSEWHERE[name]).is_file()}
    # the arms search_value.py runs as subprocesses: smoke-tested through its run and tests/benchmarks/test_peers.py
    assert scripts - {"handwritten_baseline", "peers"} - elsewhere == set(BENCHMARKS)


@pytest.fixture(scope="module")
def quick_runs(tmp_path_factory) -> dict[str, tuple[subprocess.Popen, Path]]:
    """Every --quick run, each in its own folder: name → (finished process, its folder). The runs share nothing
    but the CPU and no timing is asserted, so all but ALONE start at once; those run alone afterwards, one after
    another, since their arms train for a fixed 20 s wall budget each, which six other benchmarks beside them on
    two cores can starve to nothing (CI saw an arm stopped before its study existed)."""
    runs = {}

    def start(name: str) -> None:
        folder = tmp_path_factory.mktemp(name)
        env = os.environ | {"HPSEARCH_BENCH_RESULTS": str(folder / "results")}
        cmd = [sys.executable, str(ROOT / "benchmarks" / f"{name}.py"), "--quick", *QUICK_ARGS.get(name, [])]
        runs[name] = (subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env,
                                       cwd=folder), folder)

    def wait() -> None:
        for p, _ in runs.values():
            if p.returncode is None:
                p.stderr_text = p.communicate(timeout=600)[1]

    for name in BENCHMARKS:
        if name not in ALONE:
            start(name)
    wait()
    for name in ALONE:
        start(name)
        wait()
    return runs


@pytest.mark.parametrize("name", BENCHMARKS)
def test_quick_mode_writes_json(name, quick_runs):
    r, tmp_path = quick_runs[name]
    assert r.returncode == 0, r.stderr_text[-2000:]
    data = json.loads((tmp_path / "results" / f"{name}.json").read_text())
    assert data["benchmark"] == name and data["machine"]["cores"] >= 1
    if name == "loop_throughput":  # every row names the data it was measured on, start-up apart
        assert [r["dataset"] for r in data["rows"]] == ["fashion-mnist-sample"] * 2 + ["synthetic-cifar"] * 2
        for row in data["rows"]:
            assert row["images"] == 1024 and row["image_shape"] in ([1, 28, 28], [3, 32, 32]) and row["source_path"]
            assert row["textbook_startup_s"] > 0 and row["hpsearch_startup_s"] >= 0
    if name == "search_value":  # every arm ran cold on the named data, each for the same budget
        assert data["arm_order"] == SEARCH_ARMS == [r["arm"] for r in data["runs"]]
        assert set(data["arms"]) == set(SEARCH_ARMS) and data["goal"]["statement"]  # the summary per arm
        for run in data["runs"]:
            assert run["dataset"] == "fashion-mnist-sample" and run["budget_s"] == data["budget_s"] == 20
            assert run["counts"]["tried"] >= 1 and run["threads"] == 1
            assert 0 < run["first_start_s"] < 20, "every arm's start-up, by one definition"
            toml = "default.toml" if run["arm"] in PEER_ARMS else f"{run['arm']}.toml"  # a peer runs default's file
            arm_file = tomllib.loads((tmp_path / "keep" / f"{run['arm']}-0" / toml).read_text())
            assert "enqueue" not in arm_file and arm_file["space"], "cold: no warm start"
        for run in (r for r in data["runs"] if r["arm"] in PEER_ARMS):  # the peers sampled the study's own space
            assert run["startup_s"] is not None and 0 < run["startup_s"] < 20
            for trial in run["trials"]:
                assert trial["params"]["arch"] in ("vgg", "resnet") and 0.02 <= trial["params"]["lr"] <= 0.3
    if name == "transfer":  # the arms on the named data, each for the same budget; the weights are recorded
        assert [r["arm"] for r in data["rows"]] == TRANSFER_ARMS and data["commit"]
        for row in data["rows"]:
            assert row["dataset"] == "fashion-mnist-sample" and row["budget_s"] == 20 and row["counts"]["tried"] >= 1
        weights = {r["arm"]: r["weights"] for r in data["rows"]}
        assert weights["scratch"] == ["random"]
        assert [w.split(":")[0] for w in weights["pretrained"]] == ["file"], "the converted Lite0 weights"
        assert 'pretrained = true' in data["rows"][0]["study"] and "timm:efficientnet_lite0" in data["rows"][0]["study"]
    if name == "short_schedule":  # the control at the study's epochs and the short schedule, each trained to its end
        assert [(r["arm"], r["epochs"], r["epochs_completed"], r["state"]) for r in data["runs"]] == [
            ("quick", 2, 2, "COMPLETE"), ("quick", 1, 1, "COMPLETE")]
        assert data["dataset"] == "fashion-mnist-sample" and data["threads_per_job"] == 1 and data["commit"]
        full, short = data["runs"]
        assert full["value"] > short["value"] > 40 and short["train_s"] > 0, "trained (chance is 10%), less when shorter"
    if name == "storage_scale":  # retries are counted beside errors, and each worker's log is kept
        cells = [c for c in data["cells"] if "reports" in c]
        assert cells and all(c["retries"] >= 0 and c["lock_events"] >= 0 for c in cells)
        logs = Path(data["logs"])
        for c in cells:
            kept = sorted(p.name for p in (logs / f"{c['backend']}-w{c['workers']}").glob("worker-*.txt"))
            assert kept == sorted(f"worker-{i}.txt" for i in range(c["workers"]))
            assert "done:" in (logs / f"{c['backend']}-w{c['workers']}" / "worker-0.txt").read_text()


def test_peer_tuners_are_installed_or_said_skipped():
    """The peer arms need the `bench` extra; CI installs it (.ci/run), so there their absence fails."""
    if not PEERS_INSTALLED:
        if os.environ.get("CI") == "true":
            pytest.fail("CI runs the peer tuners: pip install -e '.[bench]' (.ci/run adds the extra)")
        pytest.skip("syne-tune / ray[tune] not installed (pip install -e '.[bench]'): the search_value smoke run "
                    "left out the peer arms syne-asha, ray-asha")


def test_search_value_refuses_an_arm_the_peer_tools_no_longer_have(tmp_path):
    r = run_benchmark("search_value", ["--quick", "--arms", "default,syne-mobster"], tmp_path)
    assert r.returncode == 2 and "syne-mobster: Syne Tune 0.16 has no MOBSTER" in r.stderr
    assert "Traceback" not in r.stderr


def test_search_value_arms_start_cold_and_differ_only_in_sampler_and_pruner(tmp_path):
    """search_value removes a study file's warm start; a variant replaces only [sampler] and [pruner]."""
    search_value = load_benchmark("search_value")
    warm = tmp_path / "warm.toml"
    warm.write_text((ROOT / "studies" / "fashion_mnist.toml").read_text() + '\n[[enqueue]]\narch = "vgg"\nlr = 0.05\n'
                    'batch_size = 128\nvgg = { stages = 3, width = 16 }\n\n[[enqueue]]\narch = "resnet"\n')
    assert len(load_spec(warm).enqueue) == 2
    shipped = load_spec(search_value.study_file(warm, "default", False, tmp_path))
    random = load_spec(search_value.study_file(warm, "random", False, tmp_path))
    assert shipped.enqueue == () and random.enqueue == ()
    assert (random.sampler.name, random.pruner.name) == ("random", "none")
    assert shipped.space == random.space and shipped.train == random.train and shipped.data == random.data


def test_loop_throughput_refuses_an_absent_dataset(tmp_path):
    """A named dataset that is not there stops the run with one line, before anything is measured; no
    other data is swapped in (this machine's /usr/share/datasets copy lies outside --data-dir), nothing is
    downloaded, and no JSON is written."""
    empty = tmp_path / "empty"
    empty.mkdir()
    r = run_benchmark("loop_throughput", ["--dataset", "fashion-mnist", "--data-dir", str(empty)], tmp_path,
                      HOME=str(tmp_path / "home"))
    assert r.returncode == 1, r.stderr[-2000:]
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert lines[0].startswith(f"loop_throughput: dataset fashion-mnist not found in {empty}")
    assert "--dataset fashion-mnist-sample" in lines[0]
    assert not (tmp_path / "results" / "loop_throughput.json").exists()
    assert not (tmp_path / "home" / ".cache").exists()  # no torchvision download was tried


def test_short_schedule_retrains_the_configuration_it_names_at_the_epochs_it_names(tmp_path):
    """short_schedule's study: the source trial's configuration enqueued (architecture parameters included), the
    schedule shortened, no search around it; the split's seed and the data stay the study's."""
    short = load_benchmark("short_schedule")
    shipped_text = (ROOT / "studies" / "fashion_mnist.toml").read_text()
    params = {"arch": "resnet", "lr": 0.0631, "batch_size": 256, "weight_decay": 1.9e-05, "label_smoothing": 0.1,
              "aug_strength": 0.12, "resnet.width": 12}
    path = tmp_path / "s.toml"
    path.write_text(short.study_text(shipped_text + '\n[[enqueue]]\narch = "vgg"\n', params, 3))
    got, shipped = load_spec(path), load_spec(ROOT / "studies" / "fashion_mnist.toml")
    assert got.enqueue == (params,), "only the source configuration, the study's own warm start dropped"
    assert got.train.max_epochs == 3 and (got.sampler.name, got.pruner.name) == ("random", "none")
    assert got.data == shipped.data and got.study.seed == shipped.study.seed and got.space == shipped.space
    source = {"runs": [{"arm": "random", "seed": 100, "trials": [
        {"number": 0, "state": "COMPLETE", "value": 92.0, "params": params},
        {"number": 1, "state": "COMPLETE", "value": 93.1, "params": {**params, "lr": 0.1}},
        {"number": 2, "state": "PRUNED", "value": 95.0, "params": {**params, "lr": 0.2}}]}]}
    jobs = short.plan(source, 6, [3, 4], {("random", 100)}, None)
    assert [(j["trial"], j["epochs"], j["params"]["lr"], j["source_value"]) for j in jobs] == [
        (1, 6, 0.1, 93.1), (1, 3, 0.1, 93.1), (1, 4, 0.1, 93.1)], "the best complete trial, the control first"
    assert short.plan(source, 6, [3], set(), ["default"]) == []


def test_short_schedule_refuses_a_file_that_is_not_a_search_value_result(tmp_path):
    (tmp_path / "other.json").write_text('{"benchmark": "transfer", "rows": []}')
    r = run_benchmark("short_schedule", [str(tmp_path / "other.json")], tmp_path)
    assert r.returncode == 2 and r.stderr.strip().splitlines() == [
        f"short_schedule: source {tmp_path / 'other.json'}: not a search_value.py result JSON (KeyError: 'runs')"]
