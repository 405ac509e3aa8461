"""The names hpsearch stores on studies and trials, in one torch-free module: what a study holds is readable
here without opening the code that writes it (the console, status and report import this, not the trainer).

These strings are the storage format: a study written by an older hpsearch is read through the same names, so
a name here never changes. It sits in ``storage/`` because it describes what is stored; the search writes most
of it, the inspection reads it, and both import it from below.
"""

from __future__ import annotations

# --- study user attributes ---------------------------------------------------------------------------------
SPEC = "hpsearch.spec"  # the study file's document, as JSON: every worker rebuilds the same spec from it
VERSIONS = "hpsearch.versions"  # package versions of the process that created the study
RETRAIN = "hpsearch.retrain"  # what `hpsearch retrain` measured (test Top-1/Top-5, model file)

# --- trial user attributes ---------------------------------------------------------------------------------
CONFIG = "config"  # the trial's full configuration (sampled and fixed values)
REASON = "reason"  # why a trial was pruned or failed: "diverged", "time_limit", "out_of_memory at ..."
SURPLUS = "surplus"  # set on a trial started when the study was already full; it does not count
DEVICE = "device"
N_PARAMS = "n_params"
# where the model's initial weights came from: "random", "file:/path/x.safetensors", "timm cache:/path",
# "torchvision download:URL", ... (hpsearch.models.weights; a pretrained study never falls back to "random")
WEIGHTS = "weights"
EPOCHS_COMPLETED = "epochs_completed"
WALL_S = "wall_s"
ARTIFACTS = "artifacts"  # {name: artifact id} of a completed trial's confusion matrix, curves, note
CHECKPOINT = "checkpoint"  # artifact id of the trial's newest checkpoint
WORKER = "worker"  # which worker process ran it (host:pid)
HOST = "host"
# the SLURM job a trial ran in (user attribute -> the environment variable it is read from)
SLURM = {"slurm_job_id": "SLURM_JOB_ID", "slurm_array_job_id": "SLURM_ARRAY_JOB_ID",
         "slurm_array_task_id": "SLURM_ARRAY_TASK_ID"}
# asha: a paused trial's step, and the paused trial a promoted one continues
PAUSED_AT = "paused_at_step"
PROMOTED_FROM = "promoted_from"
# a retried trial that continued its predecessor's checkpoint
RESUMED_FROM = "resumed_from_trial"
RESUMED_AT = "resumed_at_epoch"
# a trial that should have continued from a checkpoint but trained from scratch: the reason (no silent fallback)
FALLBACK = "fallback"
# trial packs
PACK_ID = "pack_id"
PACK_SIZE = "pack_size"
PACK_MEMBER = "pack_member"
PACK_SIZE_CHOSEN_BY = "pack_size_chosen_by"
PACK_FORWARD = "pack_forward"
PACK_HALVED_FROM = "pack_halved_from"
PACK_RESUMED_EPOCH = "pack_resumed_epoch"

# --- trial system attributes (Optuna's own) ------------------------------------------------------------------
# RetryFailedTrialCallback's list of the trial numbers a re-queued trial retries, oldest first; read only
# through hpsearch.search.lineage
RETRY_HISTORY = "retry_history"

# the objective's value: validation Top-1 (%)
METRIC = "val_top1"
