"""The search space: the only module that calls ``trial.suggest_*``.

``suggest`` walks the spec's dimensions and returns every parameter's value for one trial: searched ones
from the sampler, fixed ones from the spec. Architecture parameters (``resnet.depth``) are suggested only
when their architecture is the trial's ``arch``, so the sampler never sees parameters that had no effect.
"""

from __future__ import annotations

from typing import Any

from hpsearch.spec import Dimension, Spec


def suggest(trial: Any, space: tuple[Dimension, ...]) -> dict[str, Any]:
    """Samples one configuration: ``{"arch": "resnet", "lr": 0.05, ..., "resnet.depth": 20}``."""
    values: dict[str, Any] = {}
    for d in space:  # "arch" comes first, so its value is known before architecture parameters
        if d.arch is not None and d.arch != values["arch"]:
            continue
        values[d.name] = _suggest_one(trial, d)
    return values


def _suggest_one(trial: Any, d: Dimension) -> Any:
    if d.fixed:
        return d.value
    if d.choices is not None:
        return trial.suggest_categorical(d.name, list(d.choices))
    if d.param.kind == "int":
        return trial.suggest_int(d.name, int(d.low), int(d.high), step=int(d.step or 1), log=d.log)
    return trial.suggest_float(d.name, d.low, d.high, step=d.step, log=d.log)


def describe(space: tuple[Dimension, ...]) -> list[tuple[str, str]]:
    """(name, description) rows for `hpsearch validate`."""
    return [(d.name, d.describe() + (f"  (when arch = {d.arch})" if d.arch else "")) for d in space]


def describe_spec(spec: Spec) -> list[str]:
    """What `hpsearch validate` prints: the study's settings, then the search space one parameter a line."""
    s, d, t = spec.study, spec.data, spec.train
    lines = [f"study {s.name}: seed {s.seed}, n_trials {s.n_trials}, timeout {s.timeout or 'none'}",
             f"data {d.dataset}: val_fraction {d.val_fraction:.4g}" + (f", val_size {d.val_size}" if d.val_size else ""),
             f"train: max_epochs {t.max_epochs}, eval_every {t.eval_every} epochs, device {t.device}, "
             f"precision {t.precision}, schedule {t.schedule}",
             f"sampler {spec.sampler.name} {spec.sampler.options or ''}".rstrip(),
             f"pruner {spec.pruner.name} {spec.pruner.options or ''}".rstrip(),
             "space:"]
    rows = describe(spec.space)
    width = max(len(n) for n, _ in rows)
    lines += [f"  {name:<{width}}  {text}" for name, text in rows]
    if spec.enqueue:
        lines.append(f"warm start: {len(spec.enqueue)} enqueued configuration(s)")
    return lines
