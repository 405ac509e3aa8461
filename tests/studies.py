"""The one study-file builder of the tests: a tiny default study, changed section by section, written as TOML.

``study_text(name="x", n_trials=4, data={"num_classes": 4}, train={"max_epochs": 2})`` starts from
:data:`DEFAULTS` (two-class 28 px synthetic images, LeNet, one epoch on the CPU: a trial takes well under a
second), applies each preset given positionally (such as :data:`PRUNED`), then the keyword sections. A section
is merged key by key; a key set to ``None`` is removed, and a section set to ``None`` is left out. A new
``sampler.name``, ``pruner.name`` or ``data.dataset`` starts that section afresh, since the other keys there
are options of the sampler, pruner or dataset they were given for. ``enqueue`` is a list of tables
(``[[enqueue]]``), replaced whole.

tomllib reads TOML but does not write it (and tomli_w is not a dependency), so :func:`to_toml` is a small
writer: tables become ``[section]`` and ``[section.sub]`` headers, lists of tables ``[[section]]``, and a
range an inline table (``lr = { low = 0.001, high = 0.01, log = true }``).
"""

from __future__ import annotations

import datetime as dt
import math
import re
from pathlib import Path
from typing import Any

DEFAULTS: dict[str, dict[str, Any]] = {
    "study": {"name": "s", "seed": 0, "n_trials": 2},
    "data": {"dataset": "synthetic", "image_size": 28, "channels": 1, "num_classes": 2, "n_images": 200},
    "train": {"max_epochs": 1, "eval_every": 0.5, "device": "cpu"},
    "sampler": {"name": "random"},
    "pruner": {"name": "none"},
    "space": {"arch": "lenet", "lr": {"low": 1e-3, "high": 0.01, "log": True}, "batch_size": 32,
              "optimizer": "adamw"},
}

# A study the median pruner acts on: four classes of 600 images, two epochs of four eval points each, pruning
# from the third trial on (n_startup_trials 2) at any eval point (n_warmup_steps 0).
PRUNED: dict[str, dict[str, Any]] = {
    "data": {"num_classes": 4, "n_images": 600},
    "train": {"max_epochs": 2},
    "pruner": {"name": "median", "n_startup_trials": 2, "n_warmup_steps": 0},
    "space": {"lr": {"low": 1e-4, "high": 0.05, "log": True}, "batch_size": 64, "weight_decay": 5e-4},
}

# the key whose value decides which other keys a section may hold
SELECTORS = {"sampler": "name", "pruner": "name", "data": "dataset"}


def study_doc(*presets: dict[str, Any], name: str | None = None, n_trials: int | None = None,
              **sections: Any) -> dict[str, Any]:
    """The study as a TOML document (dict): DEFAULTS, then each preset, then ``sections``; ``name`` and
    ``n_trials`` set ``study.name`` and ``study.n_trials``."""
    doc: dict[str, Any] = {k: dict(v) for k, v in DEFAULTS.items()}
    shortcuts = {k: v for k, v in (("name", name), ("n_trials", n_trials)) if v is not None}
    for layer in (*presets, sections, {"study": shortcuts}):
        for section, change in layer.items():
            if change is None:
                doc.pop(section, None)
            elif isinstance(change, list):  # [[enqueue]]: a list of tables, replaced whole
                doc[section] = [dict(item) for item in change]
            else:
                doc[section] = _merge(section, doc.get(section, {}), change)
    return doc


def _merge(section: str, old: dict[str, Any], change: dict[str, Any]) -> dict[str, Any]:
    selector = SELECTORS.get(section)
    merged = {} if selector in change and change[selector] != old.get(selector) else dict(old)
    for key, value in change.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = value
    return merged


def study_text(*presets: dict[str, Any], **overrides: Any) -> str:
    """The study file's text; arguments as for :func:`study_doc`."""
    return to_toml(study_doc(*presets, **overrides))


def write_study(path: Path, *presets: dict[str, Any], **overrides: Any) -> Path:
    """Writes the study file to ``path`` and returns the path."""
    path.write_text(study_text(*presets, **overrides), encoding="utf-8")
    return path


# ----------------------------------------------------------------------------------------------------------
# TOML writer

BARE_KEY = re.compile(r"[A-Za-z0-9_-]+\Z")


def _escape(s: str) -> str:
    out = []
    for ch in s:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:  # control characters: TOML basic strings refuse them raw
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return "".join(out)


def toml_key(k: str) -> str:
    return k if BARE_KEY.match(k) else f'"{_escape(k)}"'


def toml_value(v: Any) -> str:
    """One value as inline TOML (tables as inline tables)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        return ("inf" if v > 0 else "-inf") if math.isinf(v) else repr(v)
    if isinstance(v, str):
        return f'"{_escape(v)}"'
    if isinstance(v, dt.date | dt.time):  # datetime is a date
        return v.isoformat()
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        items = ", ".join(f"{toml_key(k)} = {toml_value(x)}" for k, x in v.items())
        return f"{{ {items} }}" if v else "{}"
    raise TypeError(f"no TOML form for {type(v).__name__}")


RANGE_KEYS = {"low", "high", "log", "step"}


def _is_tables(v: Any) -> bool:
    return isinstance(v, list) and bool(v) and all(isinstance(x, dict) for x in v)


def _is_range(v: Any) -> bool:
    return isinstance(v, dict) and bool(v) and set(v) <= RANGE_KEYS and not any(isinstance(x, dict | list)
                                                                                  for x in v.values())


def _table(doc: dict[str, Any], path: tuple[str, ...], out: list[str]) -> None:
    """Writes one table: its plain keys and ranges (inline), then its sub-tables and arrays of tables (after
    a header every line belongs to that header's table, so the plain keys come first)."""
    sub = {k: v for k, v in doc.items()
           if (isinstance(v, dict) and not (path and _is_range(v))) or _is_tables(v)}
    out.extend(f"{toml_key(k)} = {toml_value(v)}" for k, v in doc.items() if k not in sub)
    for k, v in sub.items():
        header = ".".join(toml_key(p) for p in (*path, k))
        for item in v if isinstance(v, list) else [v]:
            out.append("")
            out.append(f"[[{header}]]" if isinstance(v, list) else f"[{header}]")
            _table(item, (*path, k), out)


def to_toml(doc: dict[str, Any]) -> str:
    """A TOML document that ``tomllib.loads`` reads back as ``doc``."""
    out: list[str] = []
    _table(doc, (), out)
    return "\n".join(out).lstrip("\n") + "\n"
