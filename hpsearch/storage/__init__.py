"""Where studies and files live: storage URLs, masking, heartbeat, retries, Optuna internals, artifact store, checkpoints."""
