"""The search: study, space, trial attribute names, lineage, asha, scheduler, objective, pack trials."""
