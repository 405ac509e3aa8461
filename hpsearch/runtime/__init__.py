"""Running a study: the worker, launcher, SLURM, placement and options."""
