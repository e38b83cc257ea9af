"""lrlab's Optuna sweeper for Hydra (`hydra/sweeper=lrlab_optuna`)."""
