"""What ``hpsearch status`` and ``hpsearch best`` report: per-study trial counts, best values, resumed trials,
where each running trial runs (host; SLURM job and array task) and checkpoint disk use, collected as plain
data and formatted as text or JSON."""

from __future__ import annotations

import json
from typing import Any

import optuna
from optuna.trial import TrialState

from hpsearch.errors import HpsearchError
from hpsearch.inspect.collect import collect_packs, packs_text
from hpsearch.inspect.console import state_counts, summary
from hpsearch.search.study import load_study
from hpsearch.storage import attrs
from hpsearch.storage.artifacts import disk_usage
from hpsearch.storage.urls import mask_url, open_storage


def study_status(study: optuna.Study) -> dict[str, Any]:
    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    best = max(complete, key=lambda t: t.value) if complete else None
    return {"study": study.study_name, "trials": len(trials), "states": state_counts(trials),
            "best_value": best.value if best else None, "best_trial": best.number if best else None,
            "packs": collect_packs(trials),
            "resumed": [{"trial": t.number, "from_trial": t.user_attrs[attrs.RESUMED_FROM],
                         "at_epoch": t.user_attrs.get(attrs.RESUMED_AT)}
                        for t in trials if t.user_attrs.get(attrs.RESUMED_FROM) is not None],
            # trials that should have continued a checkpoint and trained from scratch instead, with the reason
            "fallbacks": [{"trial": t.number, "reason": t.user_attrs[attrs.FALLBACK]}
                          for t in trials if t.user_attrs.get(attrs.FALLBACK)],
            "running": [{"trial": t.number, **{k: t.user_attrs.get(k) for k in (attrs.HOST, *attrs.SLURM)}}
                        for t in trials if t.state == TrialState.RUNNING]}


def storage_status(url: str, study_name: str | None = None, artifacts: str | None = None) -> dict[str, Any]:
    """Every study in the storage (or one), with the artifact store's disk use (None for an object store)."""
    storage = open_storage(url, heartbeat=None)
    names = [study_name] if study_name else optuna.get_all_study_names(storage)
    return {"storage": mask_url(url), "artifact_bytes": disk_usage(artifacts),
            "studies": [study_status(load_study(storage, n)) for n in names]}


def format_status(status: dict[str, Any], as_json: bool = False) -> str:
    if as_json:
        return json.dumps(status, indent=2)
    used = status["artifact_bytes"]
    lines = [f"storage {status['storage']}: {len(status['studies'])} studies; checkpoints use "
             + (f"{used / 1e6:.1f} MB" if used is not None else "an object store")]
    for r in status["studies"]:
        best = f"best {r['best_value']:.2f}% (trial {r['best_trial']})" if r["best_value"] is not None else "no best yet"
        counts = "  ".join(f"{s} {n}" for s, n in r["states"].items())
        lines.append(f"{r['study']}: {r['trials']} trials  {counts}  {best}")
        if r["packs"]["packs"]:
            lines.append(f"  {packs_text(r['packs'])}")
        lines += [f"  trial {x['trial']} resumed trial {x['from_trial']} at epoch {x['at_epoch']}"
                  for x in r["resumed"]]
        if r["fallbacks"]:
            lines.append(f"  {len(r['fallbacks'])} trained from scratch instead of resuming: "
                         + "; ".join(f"trial {x['trial']} ({x['reason']})" for x in r["fallbacks"]))
        lines += [f"  trial {x['trial']} running on {x['host'] or 'an unknown host'}{_slurm_text(x)}"
                  for x in r["running"]]
    return "\n".join(lines)


def _slurm_text(running: dict[str, Any]) -> str:
    """`` (slurm job 1235 = array task 1234_1)``, `` (slurm job 1235)`` or nothing outside SLURM."""
    if not running["slurm_job_id"]:
        return ""
    array = running["slurm_array_job_id"], running["slurm_array_task_id"]
    return f" (slurm job {running['slurm_job_id']}" + (f" = array task {array[0]}_{array[1]})" if all(array) else ")")


def best_report(study: optuna.Study, as_json: bool = False) -> str:
    """The best completed trial: the run summary, or JSON with number, value (val Top-1, %), metric, params and
    user attributes; HpsearchError (exit 1) while the study has no completed trial."""
    if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        raise HpsearchError(f"study {study.study_name!r} has no completed trial yet")
    if not as_json:
        return summary(study)
    t = study.best_trial
    return json.dumps({"number": t.number, "value": t.value, "metric": "val_top1", "params": t.params,
                       "user_attrs": t.user_attrs}, indent=2, default=str)
