"""The training loop, trial packs, augmentation, checkpoint format and trial setup; never imports optuna."""
