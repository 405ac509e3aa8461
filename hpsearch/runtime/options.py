"""``WorkerOptions``: what ``hpsearch run``, ``worker`` and ``slurm`` take beyond the study (torch-free, so that
the CLI parses them without importing the training stack)."""

from __future__ import annotations

from dataclasses import dataclass

from hpsearch.spec import Spec, with_overrides
from hpsearch.storage.urls import DEFAULT_HEARTBEAT, Heartbeat


@dataclass(frozen=True)
class WorkerOptions:
    """What ``hpsearch run`` and ``hpsearch worker`` take beyond the study: overrides of the spec's run controls
    (None: the spec's value), where data and checkpoints live, the heartbeat, and checkpoint retention."""

    n_trials: int | None = None  # finished trials the study should hold in total
    timeout: float | None = None  # seconds after which no trial starts
    device: str | None = None
    data_dir: str | None = None
    artifacts: str | None = None  # checkpoint store: a folder or s3://bucket/prefix
    heartbeat: Heartbeat = DEFAULT_HEARTBEAT
    keep_best: int = 3  # completed trials whose checkpoints are kept
    pack: int | str | None = None  # trials trained as one fused model (overrides train.pack)
    patience: int | None = None  # stop rules (override study.patience, study.min_delta, study.target)
    min_delta: float | None = None
    target: float | None = None
    weights_dir: str | None = None  # pretrained weights (overrides train.weights_dir; --weights-dir, $HPSEARCH_WEIGHTS)
    offline: bool = False  # never download pretrained weights (--offline; $HF_HUB_OFFLINE does the same)

    def apply(self, spec: Spec) -> Spec:
        """``spec`` with these overrides; when it asks for pretrained weights, they are loaded once here (imports
        torch), so that weights that cannot be found or do not fit stop the command before a study is created."""
        spec = with_overrides(spec, self.n_trials, self.timeout, self.device, pack=self.pack, patience=self.patience,
                              min_delta=self.min_delta, target=self.target, weights_dir=self.weights_dir,
                              offline=self.offline)
        if spec.train.pretrained:
            from hpsearch.training.setup import check_pretrained

            check_pretrained(spec)
        return spec

    def worker_args(self) -> list[str]:
        """The same options as ``hpsearch worker`` arguments (for local worker processes)."""
        hb = self.heartbeat
        options = {"n_trials": self.n_trials, "timeout": self.timeout, "device": self.device,
                   "data_dir": self.data_dir, "artifacts": self.artifacts, "heartbeat_interval": hb.interval,
                   "grace_period": hb.grace, "max_retry": hb.max_retry, "keep_best": self.keep_best,
                   "pack": self.pack, "patience": self.patience, "min_delta": self.min_delta, "target": self.target,
                   "weights_dir": self.weights_dir}
        out: list[str] = []
        for k, v in options.items():
            if v is not None:
                out += [f"--{k.replace('_', '-')}", str(v)]
        return out + (["--offline"] if self.offline else [])
