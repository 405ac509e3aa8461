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
from datetime import datetime
from importlib import resources
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial

from hpsearch.errors import SpecError
from hpsearch.inspect.collect import (
    collect_anytime,
    collect_arch,
    collect_curves,
    collect_header,
    collect_history,
    collect_importance,
    collect_leaderboard,
    collect_parallel,
    collect_savings,
    collect_slices,
    packs_text,
    read_trials,
    study_info,
)
from hpsearch.params import fmt_params
from hpsearch.storage.urls import mask_secrets, mask_url

log = logging.getLogger("hpsearch")
USER_LAYOUTS = Path("dashboards")  # relative: a user's own layouts, in the working directory
BUILTIN_LAYOUTS = resources.files("hpsearch.inspect") / "layouts"  # package data, so a wheel carries them

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

# ============================================================================================================
# Study info and layout
# ============================================================================================================


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
              f"<dt>trained from scratch instead of resuming</dt><dd>{d.get('fallbacks', 0)}</dd>",
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
