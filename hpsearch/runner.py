"""Command-line overrides of a spec (they apply to one command and are not stored in the study)."""

from __future__ import annotations

import dataclasses

from hpsearch.spec import Spec


def with_overrides(spec: Spec, n_trials: int | None = None, timeout: float | None = None, device: str | None = None,
                   seed: int | None = None) -> Spec:
    study = dataclasses.replace(
        spec.study,
        n_trials=spec.study.n_trials if n_trials is None else n_trials,
        timeout=spec.study.timeout if timeout is None else timeout,
        seed=spec.study.seed if seed is None else seed,
    )
    train = spec.train if device is None else dataclasses.replace(spec.train, device=device)
    return dataclasses.replace(spec, study=study, train=train)
