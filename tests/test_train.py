"""The training loop on its own: it learns, evaluates at the promised points, and detects divergence."""

from __future__ import annotations

import pytest
import torch

from hpsearch.data import load_dataset
from hpsearch.data.loader import DeviceData
from hpsearch.models import create_model
from hpsearch.spec import DataSpec
from hpsearch.train import Diverged, TrainConfig, fit, lr_factor


@pytest.fixture(scope="module")
def data():
    ds = load_dataset(DataSpec("synthetic", image_size=28, channels=1, num_classes=4, n_images=800), seed=0)
    return DeviceData(ds, torch.device("cpu"))


def config(**kw) -> TrainConfig:
    base = dict(lr=3e-3, batch_size=64, weight_decay=5e-4, optimizer="adamw", label_smoothing=0.0,
                aug_strength=0.0, max_epochs=3, eval_every=0.5)
    return TrainConfig(**(base | kw))


class Recorder:
    def __init__(self):
        self.points, self.progress = [], []

    def on_eval(self, p):
        self.points.append(p)

    def on_progress(self, *args):
        self.progress.append(args)


def test_fit_learns_and_reports_every_eval_point(data):
    torch.manual_seed(0)
    rec = Recorder()
    result = fit(create_model("lenet", 4, 1, 28), data, config(), [rec])
    assert [p.step for p in rec.points] == [1, 2, 3, 4, 5, 6]
    assert [round(p.epoch, 1) for p in rec.points] == [0.5, 1.0, 1.5, 2.0, 2.5, 3.0]
    assert result.top1 == rec.points[-1].top1
    assert result.top1 > 60.0, f"4 classes: chance is 25%, got {result.top1}"
    assert all(p.top5 >= p.top1 for p in rec.points)
    assert result.images_per_s > 0 and rec.progress


def test_same_seed_same_result(data):
    runs = []
    for _ in range(2):
        torch.manual_seed(0)
        runs.append(fit(create_model("vgg", 4, 1, 28, stages=1, width=8), data,
                        config(max_epochs=1, aug_strength=0.5, seed=7)).top1)
    assert runs[0] == runs[1]


def test_divergence_is_detected(data):
    torch.manual_seed(0)
    with pytest.raises(Diverged):
        fit(create_model("lenet", 4, 1, 28), data, config(lr=1e6, optimizer="sgd", weight_decay=0.0))


def test_a_hook_can_stop_training(data):
    class Stop(Exception):
        pass

    class StopAt2:
        def on_eval(self, p):
            if p.step == 2:
                raise Stop

    with pytest.raises(Stop):
        fit(create_model("lenet", 4, 1, 28), data, config(), [StopAt2()])


@pytest.mark.parametrize("schedule", ["onecycle", "linear", "constant"])
def test_schedule_warms_up_then_decays(schedule):
    f = [lr_factor(s, 100, schedule, 0.2) for s in range(100)]
    assert f[0] == pytest.approx(0.1) and max(f) == pytest.approx(1.0)
    assert f[19] < f[20]
    if schedule != "constant":
        assert f[-1] < 0.05


def test_resume_from_a_checkpoint_equals_an_uninterrupted_run(data, tmp_path):
    cfg = config(max_epochs=3, eval_every=1.0, aug_strength=0.5, seed=3)
    torch.manual_seed(0)
    straight = Recorder()
    fit(create_model("vgg", 4, 1, 28, stages=1, width=8), data, cfg, [straight])

    class Interrupt(Exception):
        pass

    class SaveAndStop:
        def on_epoch_end(self, epoch, checkpoint):
            if epoch == 1:
                torch.save(checkpoint(), tmp_path / "ckpt.pt")
                raise Interrupt

    torch.manual_seed(0)
    with pytest.raises(Interrupt):
        fit(create_model("vgg", 4, 1, 28, stages=1, width=8), data, cfg, [SaveAndStop()])
    ckpt = torch.load(tmp_path / "ckpt.pt", weights_only=True)  # plain tensors and values only
    assert ckpt["epoch"] == 1 and len(ckpt["points"]) == 1

    torch.manual_seed(123)  # a fresh process would have other RNG state: the checkpoint restores it
    resumed = Recorder()
    result = fit(create_model("vgg", 4, 1, 28, stages=1, width=8), data, cfg, [resumed], resume=ckpt)
    assert [p.step for p in resumed.points] == [2, 3], "epochs before the checkpoint are not retrained"
    assert [p.top1 for p in resumed.points] == [p.top1 for p in straight.points[1:]]
    assert result.top1 == straight.points[-1].top1


@pytest.mark.parametrize("stop_at", [1, 3])  # in the middle of epoch 1, and of epoch 2
def test_resume_from_a_mid_epoch_eval_point_equals_an_uninterrupted_run(data, tmp_path, stop_at):
    cfg = config(max_epochs=2, eval_every=0.5, aug_strength=0.5, seed=5)
    torch.manual_seed(0)
    straight = Recorder()
    fit(create_model("vgg", 4, 1, 28, stages=1, width=8), data, cfg, [straight])

    class Pause(Exception):
        pass

    class SaveAt:
        def on_eval_state(self, point, checkpoint):
            if point.step == stop_at:
                torch.save(checkpoint(), tmp_path / "ckpt.pt")
                raise Pause

    torch.manual_seed(0)
    with pytest.raises(Pause):
        fit(create_model("vgg", 4, 1, 28, stages=1, width=8), data, cfg, [SaveAt()])
    ckpt = torch.load(tmp_path / "ckpt.pt", weights_only=True)
    assert ckpt["batch"] > 0 and ckpt["epoch"] == stop_at // 2, "a checkpoint in the middle of an epoch"
    torch.manual_seed(99)
    resumed = Recorder()
    result = fit(create_model("vgg", 4, 1, 28, stages=1, width=8), data, cfg, [resumed], resume=ckpt)
    assert [p.step for p in resumed.points] == list(range(stop_at + 1, 5))
    assert [p.top1 for p in resumed.points] == [p.top1 for p in straight.points[stop_at:]]
    assert [p.train_loss for p in resumed.points] == [p.train_loss for p in straight.points[stop_at:]]
    assert result.top1 == straight.points[-1].top1


def test_final_evaluation_counts_the_confusion_matrix(data):
    from hpsearch.trial_artifacts import confusion_matrix

    torch.manual_seed(0)
    model = create_model("lenet", 4, 1, 28)
    result = fit(model, data, config(max_epochs=1))
    cm = result.confusion
    assert cm.shape == (4, 4) and int(cm.sum()) == data.val_y.shape[0]
    assert 100.0 * float(cm.diagonal().sum()) / int(cm.sum()) == pytest.approx(result.top1)
    # the same counts as a separate pass over the validation set with the trained model
    assert torch.equal(cm, confusion_matrix(model, data, 1024, "fp32"))
