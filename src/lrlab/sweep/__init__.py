"""lrlab's Optuna sweeps, one job per module: `settings` (the `hydra.sweeper` keys), `search_space`
(Hydra sweep syntax -> Optuna distributions), `samplers` and `storage` (tables by name), `study`
(create/resume, lookups), `recovery` (trials left RUNNING by a dead sweep), `baselines` (finder-rule
trials), `session` (the ask/tell loop over a `run_batch` callable), `parent` (the MLflow parent
run), `results`, `report` and `report_plot`, and `sweeper` (the Hydra `Sweeper` wiring them)."""
