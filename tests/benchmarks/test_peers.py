"""The peer arms of search_value.py (benchmarks/peers.py) train a configuration exactly as hpsearch trains it, so
that only the search policy differs between the arms: the same data split, model, seed, training settings and
eval points give the same learning curve, value for value."""

from __future__ import annotations

import sys
from pathlib import Path

import optuna
import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

import peers  # noqa: E402
import search_value  # noqa: E402


def study(tmp_path: Path) -> Path:
    """The study file the peer arms of ``search_value.py --quick`` run (the shipped Fashion-MNIST study on the
    embedded sample, one epoch, two eval points), with one configuration enqueued, no pruning and seed 3. The
    sample learns (57% val Top-1 after the epoch), so that a wrong seed, split or hyperparameter moves the curve."""
    path = search_value.study_file(ROOT / "studies" / "fashion_mnist.toml", "default", True, tmp_path)
    text = search_value.set_keys(path.read_text(), "study", {"seed": "3", "n_trials": "1"})
    text = search_value.set_keys(text, "pruner", {"name": '"none"'}, drop_others=True)
    path.write_text(text + '\n[[enqueue]]\narch = "vgg"\nlr = 0.08\nbatch_size = 128\nweight_decay = 1e-3\n'
                    'label_smoothing = 0.1\naug_strength = 0.12\nvgg = { stages = 2, width = 16 }\n')
    return path


# the same configuration as a peer tuner hands it over: flat, every arch's parameters sampled (Syne Tune's space)
PEER_CONFIG = {"arch": "vgg", "lr": 0.08, "batch_size": 128, "weight_decay": 1e-3, "label_smoothing": 0.1,
               "aug_strength": 0.12, "vgg.stages": 2, "vgg.width": 16, "resnet.width": 12, "resnet.depth": 8}


@pytest.fixture
def one_thread(monkeypatch):
    """Both sides train with one torch thread (float sums in one order)."""
    monkeypatch.setenv("HPSEARCH_THREADS", "1")
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_a_peer_trial_equals_the_hpsearch_trial_of_the_same_configuration(tmp_path, one_thread, cli):
    path = study(tmp_path)
    r = cli("run", str(path), "--storage", f"sqlite:///{tmp_path / 's.db'}", "--artifacts", str(tmp_path / "a"),
            cwd=tmp_path, env={"HPSEARCH_THREADS": "1", "OMP_NUM_THREADS": "1", "HPSEARCH_NO_LIVE": "1"})
    assert r.returncode == 0, r.stderr[-2000:]
    trial = optuna.load_study(study_name="fashion_mnist", storage=f"sqlite:///{tmp_path / 's.db'}").trials[0]
    assert trial.state == optuna.trial.TrialState.COMPLETE and trial.number == 0
    assert trial.value > 40.0, "the sample must learn (10 classes: chance is 10%), or equal curves prove nothing"

    curve: list[tuple[int, float]] = []
    trainer = peers.Trainer(str(path), "cpu")
    assert trainer.max_points() == 2
    top1 = trainer.train(PEER_CONFIG, trial.number, lambda step, t: curve.append((step, t)) or True)

    assert curve == sorted(trial.intermediate_values.items()), "the same eval points, value for value"
    assert top1 == trial.value


def test_a_peer_stops_a_trial_when_its_scheduler_says_so(tmp_path, one_thread):
    path = study(tmp_path)
    seen: list[int] = []
    with pytest.raises(peers.Stopped):
        peers.Trainer(str(path), "cpu").train(PEER_CONFIG, 0, lambda step, t: seen.append(step) or False)
    assert seen == [1]


def test_the_hand_written_loop_learns_and_reports_at_the_study_s_eval_points(tmp_path, one_thread):
    """The hand-written arm's and ray-user's training (``handwritten_baseline.train_trial``: torchvision dataset,
    PIL transforms, DataLoader, SGD + OneCycleLR) on the embedded sample in torchvision's layout: one epoch, two
    eval points (as the peers' half epochs), the last one returned, above chance."""
    import handwritten_baseline as hb
    from torchvision import datasets

    root = str(search_value.torchvision_root(True, tmp_path))
    train_idx, val_idx = hb.split_indices(len(datasets.FashionMNIST(root, train=True, download=False)), 500, 3)
    cfg = {"arch": "vgg", "lr": 0.08, "batch_size": 128, "weight_decay": 1e-3, "label_smoothing": 0.1,
           "aug_strength": 0.12, "model": {"stages": 2, "width": 16}}
    points: list[tuple[int, float]] = []
    cpu = torch.device("cpu")
    top1 = hb.train_trial(cfg, root, train_idx, hb.val_loader(root, val_idx, 0, cpu), 1, 3, 0, cpu,
                          lambda k, acc: points.append((k, acc)), evals_per_epoch=2)
    assert [k for k, _ in points] == [0, 1] and points[-1][1] == top1
    assert top1 > 40.0, points  # 10 classes: chance is 10%
