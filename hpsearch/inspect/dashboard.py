"""``hpsearch dashboard``: optuna-dashboard on a study storage, with the artifact store wired in so that
checkpoints and trial artifacts (confusion matrix, per-class accuracy, augmentation preview) are viewable."""

from __future__ import annotations

import sys
from typing import TextIO

from hpsearch.storage.artifacts import open_artifact_store
from hpsearch.storage.urls import mask_url, open_storage


def serve_dashboard(url: str, artifacts: str | None = None, host: str = "127.0.0.1", port: int = 8080,
                    stream: TextIO = sys.stderr) -> None:
    """Serves until interrupted; binding all interfaces prints a warning first."""
    import optuna_dashboard

    storage = open_storage(url, heartbeat=None)
    if host in ("0.0.0.0", "::"):
        print(f"warning: the dashboard listens on all interfaces ({host}); anyone who can reach port {port} can "
              "read and change the studies", file=stream, flush=True)
    print(f"optuna-dashboard for {mask_url(url)} on http://{host}:{port}/ (Ctrl-C to stop)", file=stream, flush=True)
    optuna_dashboard.run_server(storage, host=host, port=port, artifact_store=open_artifact_store(artifacts))
