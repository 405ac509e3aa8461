"""Exports a study's trials as a table, one row per trial, to CSV or JSON (chosen by the file's suffix):
number, state, value, ``param.<name>``, ``attr.<name>`` (user attributes), start and end times (ISO 8601)
and duration in seconds. Every string is passed through :func:`~hpsearch.storage.urls.mask_secrets`, so a
storage password that ended up in a trial attribute (e.g. in a driver's error message) is never written."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial

from hpsearch.errors import SpecError
from hpsearch.storage.urls import mask_secrets

FIXED_COLUMNS = ["number", "state", "value", "datetime_start", "datetime_complete", "duration_s"]


def _mask(v: Any, url: str | None) -> Any:
    if isinstance(v, str):
        return mask_secrets(v, url)
    if isinstance(v, dict):
        return {_mask(k, url): _mask(x, url) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_mask(x, url) for x in v]
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)  # JSON has no inf/nan
    return v


def trial_row(t: FrozenTrial, storage_url: str | None = None) -> dict[str, Any]:
    """One trial as a flat dict (values native: dicts and lists stay as they are), secrets masked."""
    duration = (t.datetime_complete - t.datetime_start).total_seconds() \
        if t.datetime_start and t.datetime_complete else None
    row: dict[str, Any] = {
        "number": t.number, "state": t.state.name,
        "value": t.values[0] if t.values is not None and len(t.values) == 1 else t.values,
        **{f"param.{k}": v for k, v in t.params.items()},
        **{f"attr.{k}": v for k, v in t.user_attrs.items()},
        "datetime_start": t.datetime_start.isoformat() if t.datetime_start else None,
        "datetime_complete": t.datetime_complete.isoformat() if t.datetime_complete else None,
        "duration_s": duration,
    }
    return _mask(row, storage_url)


def _columns(rows: list[dict[str, Any]]) -> list[str]:
    params = sorted({k for r in rows for k in r if k.startswith("param.")})
    attrs = sorted({k for r in rows for k in r if k.startswith("attr.")})
    return FIXED_COLUMNS[:3] + params + attrs + FIXED_COLUMNS[3:]


def export_trials(study: optuna.Study, path: str | Path, storage_url: str | None = None) -> Path:
    """Writes all trials of ``study`` to ``path`` (.csv or .json) and returns the path.

    In CSV, dict and list values are JSON-encoded and missing values are empty cells; JSON is a list of rows.
    ``storage_url``'s password, and any password in a URL, is masked."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".json"):
        raise SpecError(f"cannot export to {str(path)!r}: the suffix is {suffix or 'missing'!r}, "
                        "but must be .csv or .json")
    rows = [trial_row(t, storage_url) for t in study.get_trials(deepcopy=False)]
    path.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".json":
        path.write_text(json.dumps(rows, indent=1, default=str), encoding="utf-8")
        return path
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=_columns(rows))
        w.writeheader()
        for r in rows:
            w.writerow({k: json.dumps(v) if isinstance(v, dict | list) else v for k, v in r.items()})
    return path
