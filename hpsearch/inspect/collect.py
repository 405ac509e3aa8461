"""What the report and ``hpsearch status`` show, collected from a study's stored trials as plain data (the
"collect" half of Optuna's visualization split; :mod:`hpsearch.inspect.report` draws it). Torch-free."""

from __future__ import annotations

import json
import logging
import math
import warnings
from collections import Counter
from typing import Any

import optuna
import sqlalchemy
from optuna.distributions import CategoricalDistribution
from optuna.trial import FrozenTrial, TrialState

from hpsearch.errors import StorageError, first_line
from hpsearch.inspect.console import state_counts
from hpsearch.storage import optuna_internals as internals
from hpsearch.storage.attrs import FALLBACK, METRIC, SPEC, VERSIONS
from hpsearch.storage.urls import mask_url

log = logging.getLogger("hpsearch")


def study_info(study: optuna.Study, storage_url: str | None = None) -> dict[str, Any]:
    """Name, metric, stored spec (as a dict; {} when absent or unreadable), versions and masked storage URL."""
    attrs = study.user_attrs
    try:
        spec = json.loads(attrs.get(SPEC) or "{}")
    except (TypeError, ValueError):
        spec = {}
    try:
        metric = (study.metric_names or [METRIC])[0]
    except Exception:  # storages that do not record metric names
        metric = METRIC
    train = spec.get("train", {}) if isinstance(spec, dict) else {}
    return {"name": study.study_name, "metric": metric, "spec": spec if isinstance(spec, dict) else {},
            "versions": attrs.get(VERSIONS) or {}, "storage": mask_url(storage_url) if storage_url else None,
            "max_epochs": float(train.get("max_epochs", 0) or 0),
            "eval_every": float(train.get("eval_every", 1) or 1)}


def read_trials(study: optuna.Study) -> list[FrozenTrial]:
    """Every trial of ``study``, ordered by trial id. On an RDB storage (SQLite, PostgreSQL, MySQL) they are read
    with plain SELECTs over Optuna's own tables and decoded as Optuna decodes them: its ORM loader builds one
    object per row (270,000 at 10,000 trials × 20 eval points, ~10 s on this machine's CPUs), this reads the
    same rows in ~1 s. Other storages: ``study.get_trials``."""
    rdb = internals.rdb_backend(internals.study_storage(study))
    if rdb is None:
        return study.get_trials(deepcopy=False)
    try:
        return internals.read_rdb_trials(rdb, internals.study_id(study))
    except sqlalchemy.exc.SQLAlchemyError as e:
        raise StorageError(f"reading the trials of study {study.study_name!r} failed: "
                           f"{first_line(e, type(e).__name__)}") from None
    except (ImportError, AttributeError, KeyError, TypeError) as e:
        # Optuna's private ORM models changed shape (another Optuna version): its public reader is slower but right
        log.debug("fast trial reader unavailable (%s: %s); using get_trials", type(e).__name__, e)
        return study.get_trials(deepcopy=False)


# ============================================================================================================
# Collect: FrozenTrials -> plain data (no plotly)
# ============================================================================================================


def _complete(trials: list[FrozenTrial]) -> list[FrozenTrial]:
    return [t for t in trials if t.state == TrialState.COMPLETE and t.values is not None and len(t.values) == 1]


def _config(t: FrozenTrial) -> dict[str, Any]:
    cfg = t.user_attrs.get("config")
    return cfg if isinstance(cfg, dict) else t.params


def collect_header(trials: list[FrozenTrial], info: dict[str, Any]) -> dict[str, Any]:
    devices = Counter(str(t.user_attrs["device"]) for t in trials if t.user_attrs.get("device"))
    return {"name": info["name"], "metric": info["metric"], "storage": info.get("storage"),
            "spec": info["spec"], "versions": info["versions"], "devices": dict(devices),
            "n_trials": len(trials), "states": state_counts(trials), "packs": collect_packs(trials),
            # trials that should have continued a checkpoint and trained from scratch (the "fallback" attribute)
            "fallbacks": sum(1 for t in trials if t.user_attrs.get(FALLBACK))}


def collect_packs(trials: list[FrozenTrial]) -> dict[str, Any]:
    """Trial packs (``pack_id`` attributes): how many, their sizes and members, and finished trials per hour of
    the study's wall time (first start to last end), packed or not."""
    packs = Counter(t.user_attrs["pack_id"] for t in trials if "pack_id" in t.user_attrs)
    sizes = {t.user_attrs["pack_id"]: t.user_attrs.get("pack_size", 0) for t in trials if "pack_id" in t.user_attrs}
    starts = [t.datetime_start for t in trials if t.datetime_start is not None]
    ends = [t.datetime_complete for t in trials if t.datetime_complete is not None]
    hours = (max(ends) - min(starts)).total_seconds() / 3600 if starts and ends else 0.0
    finished = sum(1 for t in trials if t.state.is_finished())
    return {"packs": len(packs), "packed_trials": sum(packs.values()),
            "mean_size": sum(sizes.values()) / len(sizes) if sizes else 0.0,
            "largest": max(sizes.values(), default=0),
            "trials_per_hour": finished / hours if hours > 0 else None}


def collect_history(trials: list[FrozenTrial]) -> dict[str, list]:
    """Each complete trial's value by trial number, and the best value so far (non-decreasing)."""
    done = sorted(_complete(trials), key=lambda t: t.number)
    best, best_so_far = -math.inf, []
    for t in done:
        best = max(best, t.values[0])
        best_so_far.append(best)
    return {"number": [t.number for t in done], "value": [t.values[0] for t in done], "best": best_so_far}


def collect_anytime(trials: list[FrozenTrial]) -> dict[str, list]:
    """Best value against seconds since the first trial started (x at each complete trial's end)."""
    starts = [t.datetime_start for t in trials if t.datetime_start is not None]
    done = sorted((t for t in _complete(trials) if t.datetime_complete is not None),
                  key=lambda t: t.datetime_complete)
    if not starts or not done:
        return {"seconds": [], "best": []}
    t0 = min(starts)
    best, xs, ys = -math.inf, [], []
    for t in done:
        best = max(best, t.values[0])
        xs.append((t.datetime_complete - t0).total_seconds())
        ys.append(best)
    return {"seconds": xs, "best": ys}


def _final(t: FrozenTrial) -> float:
    if t.values is not None and len(t.values) == 1:
        return t.values[0]
    iv = t.intermediate_values
    return iv[max(iv)] if iv else -math.inf


def collect_curves(trials: list[FrozenTrial], eval_every: float = 1.0, max_curves: int = 500) -> dict[str, Any]:
    """Learning curves (epoch = step × eval_every, Top-1), one x/y list per state group with None between
    trials. Beyond ``max_curves`` trials: the best half of them plus an even sample of the rest."""
    with_curve = [t for t in trials if t.intermediate_values]
    chosen = with_curve
    if len(with_curve) > max_curves:
        ranked = sorted(with_curve, key=_final, reverse=True)
        n_best = max_curves // 2
        rest = ranked[n_best:]
        n_rest = max_curves - n_best
        stride = len(rest) / n_rest if n_rest else 0
        chosen = ranked[:n_best] + [rest[int(i * stride)] for i in range(n_rest)]
    groups: dict[str, dict[str, list]] = {}
    for t in sorted(chosen, key=lambda t: t.number):
        name = t.state.name if t.state in (TrialState.COMPLETE, TrialState.PRUNED) else "OTHER"
        g = groups.setdefault(name, {"x": [], "y": [], "n": 0})
        for step, v in sorted(t.intermediate_values.items()):
            g["x"].append(step * eval_every)
            g["y"].append(v)
        g["x"].append(None)
        g["y"].append(None)
        g["n"] += 1
    return {"groups": groups, "n_total": len(with_curve), "n_drawn": len(chosen),
            "downsampled": len(chosen) < len(with_curve)}


def collect_importance(trials: list[FrozenTrial], max_trials: int = 1000) -> dict[str, Any]:
    """fANOVA importance of each parameter, from at most ``max_trials`` complete trials (the most recent);
    ``note`` says why it is empty."""
    done = _complete(trials)
    if len(done) < 2:
        return {"importance": {}, "note": f"needs at least 2 complete trials, has {len(done)}"}
    done = sorted(done, key=lambda t: t.number)[-max_trials:]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tmp = optuna.create_study(direction="maximize")
            tmp.add_trials(done)
            imp = optuna.importance.get_param_importances(tmp)
    except Exception as e:
        return {"importance": {}, "note": f"importance not computed: {first_line(e, type(e).__name__)}"}
    note = f"from the latest {len(done)} complete trials" if len(_complete(trials)) > len(done) else ""
    return {"importance": {k: float(v) for k, v in imp.items()}, "note": note}


def _param_names(trials: list[FrozenTrial]) -> list[str]:
    names: dict[str, None] = {}
    for t in trials:
        names.update(dict.fromkeys(t.params))
    return list(names)


def collect_parallel(trials: list[FrozenTrial], params: list[str] | None = None) -> dict[str, Any]:
    """Complete trials' parameters (categoricals as indices with labels) and values, one column each."""
    done = _complete(trials)
    names = [p for p in (params or _param_names(done)) if any(p in t.params for t in done)]
    dims = []
    for name in names:
        dist = next(t.distributions[name] for t in done if name in t.distributions)
        vals = [t.params.get(name) for t in done]
        if isinstance(dist, CategoricalDistribution):
            labels = [str(c) for c in dist.choices]
            dims.append({"name": name, "values": [None if v is None else labels.index(str(v)) for v in vals],
                         "labels": labels, "log": False})
        else:
            dims.append({"name": name, "values": vals, "labels": None, "log": bool(getattr(dist, "log", False))})
    return {"dims": dims, "value": [t.values[0] for t in done], "number": [t.number for t in done]}


def collect_slices(trials: list[FrozenTrial], params: list[str]) -> dict[str, dict[str, list]]:
    """For each parameter present: its value and the trial's final value over complete trials."""
    done = _complete(trials)
    out = {}
    for name in params:
        pts = [(t.params[name], t.values[0], t.number) for t in done if name in t.params]
        if pts:
            log = any(getattr(t.distributions.get(name), "log", False) for t in done if name in t.params)
            out[name] = {"x": [p[0] for p in pts], "y": [p[1] for p in pts], "number": [p[2] for p in pts],
                         "log": log}
    return out


def collect_arch(trials: list[FrozenTrial]) -> dict[str, list[float]]:
    """Final values of complete trials grouped by architecture (param ``arch``, else config ``arch``)."""
    out: dict[str, list[float]] = {}
    for t in _complete(trials):
        arch = t.params.get("arch", _config(t).get("arch", "?"))
        out.setdefault(str(arch), []).append(t.values[0])
    return dict(sorted(out.items()))


def epochs_trained(t: FrozenTrial, eval_every: float, max_epochs: float) -> float:
    """Epochs a trial reached: its last reported step × eval_every, else user attr ``epochs_completed``."""
    if t.intermediate_values:
        epochs = max(t.intermediate_values) * eval_every
        return min(epochs, max_epochs) if max_epochs > 0 else epochs
    return float(t.user_attrs.get("epochs_completed") or 0)


def collect_savings(trials: list[FrozenTrial], max_epochs: float, eval_every: float = 1.0) -> dict[str, Any]:
    """Epochs trained by complete and pruned trials against n_trials × max_epochs had none been pruned."""
    counted = [t for t in trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    by_state = {"COMPLETE": 0.0, "PRUNED": 0.0}
    for t in counted:
        by_state[t.state.name] += epochs_trained(t, eval_every, max_epochs)
    trained = sum(by_state.values())
    full = len(counted) * max_epochs
    saved = 100.0 * (1 - trained / full) if full > 0 else None
    return {"n_trials": len(counted), "n_pruned": sum(t.state == TrialState.PRUNED for t in counted),
            "epochs_trained": trained, "epochs_by_state": by_state, "epochs_unpruned": full,
            "percent_saved": saved}


def collect_leaderboard(trials: list[FrozenTrial], top: int = 10) -> list[dict[str, Any]]:
    """The ``top`` complete trials by value, best first (ties: lower trial number first)."""
    done = sorted(_complete(trials), key=lambda t: (-t.values[0], t.number))[:top]
    return [{"number": t.number, "params": _config(t), "val_top1": t.values[0],
             "val_top5": t.user_attrs.get("val_top5"), "epochs": t.user_attrs.get("epochs_completed"),
             "wall_s": t.user_attrs.get("wall_s"), "state": t.state.name} for t in done]


# ============================================================================================================
# Draw: plain data -> HTML fragments (plotly figures, tables, notes)
# ============================================================================================================


def packs_text(p: dict[str, Any]) -> str:
    rate = f"; {p['trials_per_hour']:,.0f} finished trials per hour" if p["trials_per_hour"] else ""
    if not p["packs"]:
        return "none (every trial trained solo)" + rate
    return (f"{p['packs']} packs of {p['mean_size']:.1f} members on average (largest {p['largest']}), "
            f"{p['packed_trials']} packed trials" + rate)


