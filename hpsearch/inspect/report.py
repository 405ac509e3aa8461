"""The HTML report of one study: pure functions collect plain data (dicts and lists) from the study's
FrozenTrials, drawing functions turn each into a plotly figure or table, and :func:`write_report` writes them
into one self-contained HTML file (plotly.js inline once, so it opens offline). Which panels appear, in which
order and with which options, is read from a TOML layout: a user's own in ``./dashboards/``, else a built-in one
shipped in ``hpsearch/inspect/layouts/`` (see ``dashboards/README.md``).
"""

from __future__ import annotations

import html
import json
import logging
import math
import tomllib
import warnings
from collections import Counter
from datetime import datetime
from importlib import resources
from pathlib import Path
from typing import Any

import optuna
import sqlalchemy
from optuna.distributions import CategoricalDistribution
from optuna.trial import FrozenTrial, TrialState

from hpsearch.errors import SpecError, StorageError, first_line
from hpsearch.inspect.console import fmt_params, state_counts
from hpsearch.storage import optuna_internals as internals
from hpsearch.storage.urls import mask_secrets, mask_url

log = logging.getLogger("hpsearch")
SPEC_ATTR = "hpsearch.spec"  # same key as hpsearch.search.study.SPEC_ATTR (not imported: that module pulls in torch)
VERSIONS_ATTR = "hpsearch.versions"
METRIC = "val_top1"
USER_LAYOUTS = Path("dashboards")  # relative: a user's own layouts, in the working directory
BUILTIN_LAYOUTS = resources.files("hpsearch.inspect") / "layouts"  # package data, so a wheel carries them

# ============================================================================================================
# Study info and layout
# ============================================================================================================


def study_info(study: optuna.Study, storage_url: str | None = None) -> dict[str, Any]:
    """Name, metric, stored spec (as a dict; {} when absent or unreadable), versions and masked storage URL."""
    attrs = study.user_attrs
    try:
        spec = json.loads(attrs.get(SPEC_ATTR) or "{}")
    except (TypeError, ValueError):
        spec = {}
    try:
        metric = (study.metric_names or [METRIC])[0]
    except Exception:  # storages that do not record metric names
        metric = METRIC
    train = spec.get("train", {}) if isinstance(spec, dict) else {}
    return {"name": study.study_name, "metric": metric, "spec": spec if isinstance(spec, dict) else {},
            "versions": attrs.get(VERSIONS_ATTR) or {}, "storage": mask_url(storage_url) if storage_url else None,
            "max_epochs": float(train.get("max_epochs", 0) or 0),
            "eval_every": float(train.get("eval_every", 1) or 1)}


PANEL_OPTIONS: dict[str, dict[str, Any]] = {
    "header": {},
    "history": {},
    "anytime": {},
    "curves": {"max_curves": 500},
    "importance": {"max_trials": 1000},
    "parallel": {"params": None},
    "slice": {"params": ["lr", "batch_size", "aug_strength"]},
    "arch": {},
    "savings": {},
    "leaderboard": {"top": 10},
}


def layout_names(dashboards_dir: str | Path | None = None) -> list[str]:
    """Names of the layouts a name can pick: the user's (``dashboards_dir``, default ``./dashboards``) and the
    built-in ones, sorted, each once."""
    folders = (Path(dashboards_dir) if dashboards_dir is not None else USER_LAYOUTS, BUILTIN_LAYOUTS)
    return sorted({p.name.removesuffix(".toml") for f in folders if f.is_dir() for p in f.iterdir()
                   if p.name.endswith(".toml") and p.is_file()})


def load_layout(layout: str = "overview", dashboards_dir: str | Path | None = None) -> list[dict[str, Any]]:
    """Panels of a layout, each as ``{"kind": ..., **options}`` with defaults filled in; SpecError (one line)
    for anything invalid. ``layout`` is a path to a .toml file or a name, looked for first in ``dashboards_dir``
    (default ``./dashboards`` of the working directory: a user's layout of a built-in's name wins), then among
    the built-in layouts shipped in the package."""
    user = Path(dashboards_dir) if dashboards_dir is not None else USER_LAYOUTS
    if layout.endswith(".toml"):
        path = Path(layout)
        if not path.is_file():
            raise SpecError(f"layout file {layout} not found; available names: "
                            f"{', '.join(layout_names(dashboards_dir)) or 'none'}")
    else:
        path = next((p for p in (user / f"{layout}.toml", BUILTIN_LAYOUTS / f"{layout}.toml") if p.is_file()), None)
        if path is None:
            raise SpecError(f"layout {layout!r} not found in {user}/ or among the built-in layouts; available: "
                            f"{', '.join(layout_names(dashboards_dir)) or 'none'}")
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as e:
        raise SpecError(f"layout {path}: not valid TOML ({e})") from None
    if set(raw) - {"title", "panel"}:
        raise SpecError(f"layout {path}: unknown keys {sorted(set(raw) - {'title', 'panel'})}, "
                        "but only 'title' and [[panel]] tables are allowed")
    panels = []
    for i, p in enumerate(raw.get("panel", []), 1):
        kind = p.get("kind")
        if kind not in PANEL_OPTIONS:
            raise SpecError(f"layout {path}: panel {i} has kind {kind!r}, but must be one of "
                            f"{', '.join(PANEL_OPTIONS)}")
        unknown = set(p) - {"kind", "title"} - set(PANEL_OPTIONS[kind])
        if unknown:
            raise SpecError(f"layout {path}: panel {i} ({kind}) has unknown options {sorted(unknown)}; "
                            f"allowed: {', '.join(PANEL_OPTIONS[kind]) or 'none'}")
        panels.append({"kind": kind, **PANEL_OPTIONS[kind], **p})
    return panels


# ============================================================================================================
# Read: the study's trials
# ============================================================================================================


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
            "n_trials": len(trials), "states": state_counts(trials), "packs": collect_packs(trials)}


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


def _note(text: str) -> str:
    return f'<p class="note">{html.escape(text)}</p>'


def _layout(title: str, x: str, y: str, **kw: Any) -> dict[str, Any]:
    return {"title": {"text": title}, "xaxis": {"title": {"text": x}}, "yaxis": {"title": {"text": y}},
            "height": 420, "margin": {"l": 60, "r": 20, "t": 50, "b": 50}, **kw}


def draw_history(d: dict, metric: str) -> list[dict] | str:
    if not d["number"]:
        return _note("no data: no complete trial yet")
    return [{"data": [{"type": "scattergl", "mode": "markers", "name": metric, "x": d["number"], "y": d["value"],
                       "marker": {"size": 5}},
                      {"type": "scatter", "mode": "lines", "name": "best so far", "x": d["number"],
                       "y": d["best"], "line": {"shape": "hv"}}],
             "layout": _layout("Optimization history", "trial", metric)}]


def draw_anytime(d: dict, metric: str) -> list[dict] | str:
    if not d["seconds"]:
        return _note("no data: no complete trial yet")
    return [{"data": [{"type": "scatter", "mode": "lines+markers", "name": "best", "x": d["seconds"],
                       "y": d["best"], "line": {"shape": "hv"}}],
             "layout": _layout("Best value against wall-clock time", "seconds since the first trial started",
                               f"best {metric}")}]


def draw_curves(d: dict, metric: str) -> list[dict] | str:
    if not d["groups"]:
        return _note("no data: no trial reported an intermediate value")
    colors = {"COMPLETE": "rgba(31,119,180,0.5)", "PRUNED": "rgba(214,39,40,0.35)", "OTHER": "rgba(127,127,127,0.4)"}
    data = [{"type": "scattergl", "mode": "lines", "name": f"{k.lower()} ({g['n']})", "x": g["x"], "y": g["y"],
             "connectgaps": False, "line": {"width": 1, "color": colors[k]}} for k, g in d["groups"].items()]
    title = "Learning curves"
    if d["downsampled"]:
        title += f" (down-sampled: {d['n_drawn']} of {d['n_total']} trials, the best half and an even sample)"
    return [{"data": data, "layout": _layout(title, "epoch", metric)}]


def draw_importance(d: dict) -> list[dict] | str:
    if not d["importance"]:
        return _note(f"no data: {d['note']}")
    items = sorted(d["importance"].items(), key=lambda kv: kv[1])
    fig = {"data": [{"type": "bar", "orientation": "h", "x": [v for _, v in items], "y": [k for k, _ in items]}],
           "layout": _layout("Hyperparameter importance (fANOVA)", "importance", "parameter",
                             height=max(250, 40 + 30 * len(items)))}
    return [fig] + ([_note(d["note"])] if d["note"] else [])


def draw_parallel(d: dict, metric: str) -> list[dict] | str:
    if not d["value"]:
        return _note("no data: no complete trial yet")
    dims = [{"label": metric, "values": d["value"]}]
    for dim in d["dims"]:
        if dim["labels"] is not None:
            dims.append({"label": dim["name"], "values": dim["values"], "tickvals": list(range(len(dim["labels"]))),
                         "ticktext": dim["labels"]})
        elif dim["log"]:
            vals = [math.log10(v) if v else None for v in dim["values"]]
            dims.append({"label": f"log10 {dim['name']}", "values": vals})
        else:
            dims.append({"label": dim["name"], "values": dim["values"]})
    return [{"data": [{"type": "parcoords", "dimensions": dims,
                       "line": {"color": d["value"], "colorscale": "Viridis", "showscale": True}}],
             "layout": {"title": {"text": "Parallel coordinates"}, "height": 450}}]


def draw_slices(d: dict, metric: str) -> list[dict] | str:
    if not d:
        return _note("no data: none of the parameters appears in a complete trial")
    figs = []
    for name, s in d.items():
        xaxis = {"title": {"text": name}, **({"type": "log"} if s["log"] else {})}
        figs.append({"data": [{"type": "scattergl", "mode": "markers", "x": s["x"], "y": s["y"], "text": s["number"],
                               "hovertemplate": "trial %{text}<br>%{x}: %{y}<extra></extra>",
                               "marker": {"size": 5, "opacity": 0.6}}],
                     "layout": {**_layout(f"Slice: {name}", name, metric), "xaxis": xaxis, "height": 350}})
    return figs


def draw_arch(d: dict, metric: str) -> list[dict] | str:
    if not d:
        return _note("no data: no complete trial yet")
    data = [{"type": "box", "name": arch, "y": ys, "boxpoints": "all", "jitter": 0.4, "pointpos": 0,
             "marker": {"size": 3}} for arch, ys in d.items()]
    return [{"data": data, "layout": _layout(f"Final {metric} by architecture", "arch", metric, showlegend=False)}]


def draw_savings(d: dict) -> list[dict] | str:
    if d["percent_saved"] is None:
        return _note("no data: no complete or pruned trial yet (or max_epochs unknown)")
    text = (f"{d['n_trials']} trials ({d['n_pruned']} pruned) trained {d['epochs_trained']:g} epochs of "
            f"{d['epochs_unpruned']:g} had nothing been pruned: {d['percent_saved']:.1f}% saved")
    fig = {"data": [{"type": "bar", "x": ["trained (complete)", "trained (pruned)", "without pruning"],
                     "y": [d["epochs_by_state"]["COMPLETE"], d["epochs_by_state"]["PRUNED"], d["epochs_unpruned"]]}],
           "layout": _layout("Pruning savings", "", "epochs", height=350)}
    return [_note(text), fig]


def _cell(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return "" if v is None else str(v)


def draw_leaderboard(rows: list[dict], secret_url: str | None) -> str:
    if not rows:
        return _note("no data: no complete trial yet")
    cols = ["number", "params", "val_top1", "val_top5", "epochs", "wall_s", "state"]
    head = "".join(f"<th>{c}</th>" for c in cols)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(mask_secrets(fmt_params(r[c]) if c == 'params' else _cell(r[c]), secret_url))}</td>"
                         for c in cols) + "</tr>" for r in rows)
    return f'<h3>Top {len(rows)} trials</h3><table class="board"><tr>{head}</tr>{body}</table>'


def packs_text(p: dict[str, Any]) -> str:
    rate = f"; {p['trials_per_hour']:,.0f} finished trials per hour" if p["trials_per_hour"] else ""
    if not p["packs"]:
        return "none (every trial trained solo)" + rate
    return (f"{p['packs']} packs of {p['mean_size']:.1f} members on average (largest {p['largest']}), "
            f"{p['packed_trials']} packed trials" + rate)


def draw_header(d: dict, secret_url: str | None) -> str:
    def safe(text: str) -> str:
        return html.escape(mask_secrets(text, secret_url))

    lines = [f"<h1>Study {safe(d['name'])}</h1>", "<dl>",
             f"<dt>metric</dt><dd>{safe(d['metric'])} (maximize)</dd>"]
    if d["storage"]:
        lines.append(f"<dt>storage</dt><dd>{safe(mask_url(d['storage']))}</dd>")
    states = ", ".join(f"{k} {v}" for k, v in d["states"].items())
    lines += [f"<dt>trials</dt><dd>{d['n_trials']} ({safe(states)})</dd>",
              f"<dt>trial packs</dt><dd>{safe(packs_text(d['packs']))}</dd>",
              f"<dt>devices</dt><dd>{safe(', '.join(f'{k} ({v})' for k, v in d['devices'].items()) or 'none recorded')}</dd>",
              f"<dt>versions</dt><dd>{safe(', '.join(f'{k} {v}' for k, v in d['versions'].items()) or 'none recorded')}</dd>",
              "</dl>", "<details><summary>spec</summary><pre>"
              f"{safe(json.dumps(d['spec'], indent=2, sort_keys=True, default=str))}</pre></details>"]
    return "\n".join(lines)


# ============================================================================================================
# Assemble
# ============================================================================================================


def build_panel(panel: dict[str, Any], trials: list[FrozenTrial], info: dict[str, Any],
                secret_url: str | None = None) -> list[dict] | str:
    """One panel as a list of plotly figure dicts and HTML strings, or a single HTML string."""
    kind, metric = panel["kind"], info["metric"]
    if kind == "header":
        return draw_header(collect_header(trials, info), secret_url)
    if kind == "history":
        return draw_history(collect_history(trials), metric)
    if kind == "anytime":
        return draw_anytime(collect_anytime(trials), metric)
    if kind == "curves":
        return draw_curves(collect_curves(trials, info["eval_every"], panel["max_curves"]), metric)
    if kind == "importance":
        return draw_importance(collect_importance(trials, panel["max_trials"]))
    if kind == "parallel":
        return draw_parallel(collect_parallel(trials, panel["params"]), metric)
    if kind == "slice":
        return draw_slices(collect_slices(trials, panel["params"]), metric)
    if kind == "arch":
        return draw_arch(collect_arch(trials), metric)
    if kind == "savings":
        return draw_savings(collect_savings(trials, info["max_epochs"], info["eval_every"]))
    if kind == "leaderboard":
        return draw_leaderboard(collect_leaderboard(trials, panel["top"]), secret_url)
    raise SpecError(f"panel kind {kind!r} is unknown; allowed: {', '.join(PANEL_OPTIONS)}")


_CSS = ("body{font-family:sans-serif;margin:2em;max-width:1200px} .note{color:#555;font-style:italic} "
        "table.board{border-collapse:collapse;font-size:90%} .board td,.board th{border:1px solid #ccc;"
        "padding:3px 6px;text-align:left} section{margin-bottom:2em}")


def write_report(study: optuna.Study, path: str | Path, layout: str = "overview",
                 dashboards_dir: str | Path | None = None, storage_url: str | None = None) -> Path:
    """Writes the study's report as one self-contained HTML file at ``path`` and returns the path.

    ``storage_url`` (optional) is shown masked in the header; its password is masked everywhere."""
    import plotly.io as pio

    panels = load_layout(layout, dashboards_dir)
    trials = read_trials(study)
    info = study_info(study, storage_url)
    parts, plotlyjs_done = [], False
    for panel in panels:
        out = build_panel(panel, trials, info, storage_url)
        items = [out] if isinstance(out, str) else out
        chunk = []
        for item in items:
            if isinstance(item, str):
                chunk.append(item)
                continue
            frag = pio.to_html(item, include_plotlyjs=not plotlyjs_done, full_html=False, validate=False,
                               config={"responsive": True})
            if plotlyjs_done:
                frag = mask_secrets(frag, storage_url)  # figure data may carry trial strings
            chunk.append(frag)
            plotlyjs_done = True
        if panel.get("title"):
            chunk.insert(0, f"<h2>{html.escape(panel['title'])}</h2>")
        parts.append(f'<section class="panel-{panel["kind"]}">' + "\n".join(chunk) + "</section>")
    stamp = datetime.now().astimezone().isoformat(timespec="seconds")
    title = html.escape(mask_secrets(f"hpsearch report: {info['name']}", storage_url))
    doc = (f'<!DOCTYPE html>\n<html><head><meta charset="utf-8"><title>{title}</title><style>{_CSS}</style>'
           f'</head><body>\n' + "\n".join(parts) + f'\n<p class="note">written {stamp}</p></body></html>\n')
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(doc, encoding="utf-8")
    return path


def default_report_path(study_name: str) -> str:
    """``dashboards/<study>.html``; a stored study name that is not a plain file name (``../x``) is refused."""
    from hpsearch.spec import STUDY_NAME_RE  # (spec imports torch; the rest of this module does not)

    if not STUDY_NAME_RE.match(study_name):
        raise SpecError(f"study name {study_name!r} cannot name a file in dashboards/; pass -o FILE.html")
    return f"dashboards/{study_name}.html"
