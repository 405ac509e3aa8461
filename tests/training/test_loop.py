"""The training loop on its own: it learns, evaluates at the promised points, and detects divergence."""

from __future__ import annotations

import pytest
import torch

from hpsearch.data import load_dataset
from hpsearch.data.loader import DeviceData
from hpsearch.models import create_model
from hpsearch.spec import DataSpec
from hpsearch.training.loop import Diverged, TrainConfig, fit, lr_factor


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


class Interrupt(Exception):
    pass


class SaveAndStop:
    """Saves the resume state and stops training: at the end of epoch 1 (``at_step`` None) or at eval point
    ``at_step``, which may fall in the middle of an epoch."""

    def __init__(self, path, at_step: int | None = None):
        self.path, self.at_step = path, at_step

    def on_epoch_end(self, epoch, checkpoint):
        if self.at_step is None and epoch == 1:
            torch.save(checkpoint(), self.path)
            raise Interrupt

    def on_eval_state(self, point, checkpoint):
        if point.step == self.at_step:
            torch.save(checkpoint(), self.path)
            raise Interrupt


# (eval_every, at_step): the end of epoch 1; eval point 1, half-way through epoch 1; eval point 3, through epoch 2
@pytest.mark.parametrize("eval_every, at_step", [(1.0, None), (0.5, 1), (0.5, 3)])
def test_resume_from_a_checkpoint_equals_an_uninterrupted_run(data, tmp_path, eval_every, at_step):
    cfg = config(max_epochs=3, eval_every=eval_every, aug_strength=0.5, seed=3)
    torch.manual_seed(0)
    straight = Recorder()
    fit(create_model("vgg", 4, 1, 28, stages=1, width=8), data, cfg, [straight])

    torch.manual_seed(0)
    with pytest.raises(Interrupt):
        fit(create_model("vgg", 4, 1, 28, stages=1, width=8), data, cfg, [SaveAndStop(tmp_path / "ckpt.pt", at_step)])
    ckpt = torch.load(tmp_path / "ckpt.pt", weights_only=True)  # plain tensors and values only
    done = at_step or 1
    assert len(ckpt["points"]) == done
    if at_step is None:
        assert ckpt["epoch"] == 1 and ckpt["batch"] == 0
    else:
        assert ckpt["epoch"] == at_step // 2 and ckpt["batch"] > 0, "a checkpoint in the middle of an epoch"

    torch.manual_seed(123)  # a fresh process would have other RNG state: the checkpoint restores it
    resumed = Recorder()
    result = fit(create_model("vgg", 4, 1, 28, stages=1, width=8), data, cfg, [resumed], resume=ckpt)
    assert [p.step for p in resumed.points] == list(range(done + 1, len(straight.points) + 1)), \
        "what was trained before the checkpoint is not trained again"
    assert [p.top1 for p in resumed.points] == [p.top1 for p in straight.points[done:]]
    assert [p.train_loss for p in resumed.points] == [p.train_loss for p in straight.points[done:]]
    assert result.top1 == straight.points[-1].top1


def test_final_evaluation_counts_the_confusion_matrix(data):
    from hpsearch.search.trial_artifacts import confusion_matrix

    torch.manual_seed(0)
    model = create_model("lenet", 4, 1, 28)
    result = fit(model, data, config(max_epochs=1))
    cm = result.confusion
    assert cm.shape == (4, 4) and int(cm.sum()) == data.val_y.shape[0]
    assert 100.0 * float(cm.diagonal().sum()) / int(cm.sum()) == pytest.approx(result.top1)
    # the same counts as a separate pass over the validation set with the trained model
    assert torch.equal(cm, confusion_matrix(model, data, 1024, "fp32"))
