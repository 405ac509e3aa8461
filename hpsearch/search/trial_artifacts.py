"""What a completed trial leaves for inspection in optuna-dashboard: a confusion-matrix PNG, per-class
accuracy JSON, an augmentation preview PNG (the same training images before and after the trial's
``aug_strength``) and a markdown note. Images are drawn with PIL, so no plotting library is needed."""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path
from typing import Any

import optuna
import torch
from PIL import Image, ImageDraw
from torchvision.utils import make_grid

from hpsearch.data.loader import DeviceData
from hpsearch.params import fmt_params
from hpsearch.training.augment import Augmenter, aug_params
from hpsearch.training.loop import evaluate_logits

log = logging.getLogger("hpsearch")


@torch.inference_mode()
def confusion_matrix(model: torch.nn.Module, data: DeviceData, batch_size: int, precision: str) -> torch.Tensor:
    """(C, C) int64 counts on the validation set: rows are true classes, columns predictions (top-1)."""
    model.eval()
    aug = Augmenter(aug_params(0.0, False), data.mean, data.std)
    cm = torch.zeros(data.num_classes, data.num_classes, dtype=torch.long, device=data.device)
    evaluate_logits(lambda xb: model(aug(xb, train=False)), data.val_x, data.val_y, batch_size, precision, cm)
    return cm.cpu()


def confusion_png(cm: torch.Tensor, classes: tuple[str, ...], path: Path) -> None:
    """A heatmap of row-normalised counts, with the counts written in the cells when there is room."""
    c = cm.shape[0]
    cell = max(4, min(48, 720 // c))
    label_w = 110 if c <= 40 else 0
    img = Image.new("RGB", (label_w + c * cell + 10, label_w // 3 + c * cell + 30), "white")
    draw = ImageDraw.Draw(img)
    draw.text((label_w, 4), "confusion matrix (rows: true, columns: predicted)", fill="black")
    top = 20 + label_w // 3
    rate = cm.float() / cm.sum(1, keepdim=True).clamp_min(1)
    for i in range(c):
        if label_w:
            draw.text((4, top + i * cell + cell // 2 - 5), classes[i][:16], fill="black")
        for j in range(c):
            v = float(rate[i, j])
            shade = int(255 * (1 - v))
            colour = (shade, shade, 255) if i == j else (255, shade, shade)
            x0, y0 = label_w + j * cell, top + i * cell
            draw.rectangle([x0, y0, x0 + cell - 1, y0 + cell - 1], fill=colour, outline=(230, 230, 230))
            if cell >= 28 and cm[i, j] > 0:
                draw.text((x0 + 3, y0 + cell // 2 - 5), str(int(cm[i, j])), fill="black")
    img.save(path)


def per_class_accuracy(cm: torch.Tensor, classes: tuple[str, ...]) -> dict[str, Any]:
    totals = cm.sum(1)
    return {"classes": [{"class": name, "images": int(totals[i]), "correct": int(cm[i, i]),
                         "accuracy": round(100.0 * float(cm[i, i]) / max(1, int(totals[i])), 3)}
                        for i, name in enumerate(classes)]}


def aug_preview_png(data: DeviceData, strength: float, seed: int, path: Path, n: int = 8) -> None:
    """Two rows per image set: the first ``n`` training images as they are, then as the trial augments them."""
    x = data.train_x[:n]
    g = torch.Generator(device=data.device).manual_seed(seed)
    aug = Augmenter(aug_params(strength, data.hflip), data.mean, data.std, g)
    plain = aug(x, train=False)
    augmented = aug(x, train=True)
    mean, std = data.mean.view(1, -1, 1, 1), data.std.view(1, -1, 1, 1)
    both = torch.cat([plain, augmented]) * std + mean  # back to [0, 1]
    if both.shape[1] == 1:
        both = both.expand(-1, 3, -1, -1)
    grid = make_grid(both.clamp(0, 1).float().cpu(), nrow=n, padding=2, pad_value=1.0)
    scale = max(1, 96 // x.shape[-1])
    img = Image.fromarray((grid.permute(1, 2, 0).contiguous().numpy() * 255).astype("uint8"))
    img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    canvas = Image.new("RGB", (img.width, img.height + 18), "white")
    canvas.paste(img, (0, 18))
    ImageDraw.Draw(canvas).text((4, 3), f"top: original   bottom: aug_strength = {strength:.3f}", fill="black")
    canvas.save(path)


def note(values: dict[str, Any], model: torch.nn.Module, attrs: dict[str, Any]) -> str:
    n_params = sum(p.numel() for p in model.parameters())
    return "\n".join([
        f"## {values['arch']} — val Top-1 {attrs['val_top1']:.2f}%, Top-5 {attrs['val_top5']:.2f}%",
        "",
        f"- parameters: {n_params:,}",
        f"- epochs: {attrs['epochs_completed']}, wall time {attrs['wall_s']:.1f} s, "
        f"{attrs['train_images_per_s']:,.0f} train img/s on {attrs.get('device', '?')}",
        f"- configuration: `{fmt_params(values)}`",
    ])


def record(trial: optuna.Trial, store, model: torch.nn.Module, data: DeviceData, classes: tuple[str, ...],
           values: dict[str, Any], attrs: dict[str, Any], batch_size: int, precision: str, seed: int,
           confusion: torch.Tensor | None = None) -> None:
    """Uploads the artifacts and the note of a completed trial; a failure here never fails the trial.
    ``confusion`` is the final evaluation's matrix (``FitResult.confusion``); without it, one is computed."""
    try:
        cm = confusion if confusion is not None else confusion_matrix(model, data, batch_size, precision)
        with tempfile.TemporaryDirectory() as tmp:
            files = {"confusion_matrix.png": lambda p: confusion_png(cm, classes, p),
                     "per_class_accuracy.json": lambda p: p.write_text(json.dumps(per_class_accuracy(cm, classes),
                                                                                  indent=1)),
                     "augmentation_preview.png": lambda p: aug_preview_png(data, values["aug_strength"], seed, p)}
            ids = {}
            for name, make in files.items():
                path = Path(tmp) / name
                make(path)
                ids[name] = optuna.artifacts.upload_artifact(artifact_store=store, file_path=str(path),
                                                             study_or_trial=trial)
        trial.set_user_attr("artifacts", ids)
        import optuna_dashboard

        optuna_dashboard.save_note(trial, note(values, model, attrs))
    except Exception as e:  # inspection extras must never cost a finished result
        log.warning("trial %d: could not record its artifacts (%s: %s)", trial.number, type(e).__name__, e)
