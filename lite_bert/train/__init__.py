"""Training: the one loop, objectives, optimizers, mesh, checkpoints, evaluation, run setup."""
