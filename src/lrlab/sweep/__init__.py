"""lrlab's Optuna sweeps, one job per module: `settings` (the `hydra.sweeper` keys), `search_space`
(Hydra sweep syntax -> Optuna distributions), `samplers` (the sampler table), `study` (create/resume,
the sampler it asks with, lookups), `recovery` (trials left RUNNING by a dead sweep), `baselines`
(finder-rule trials), `session` (the ask/tell loop over a `run_batch` callable), `parent` (the
parent run, through the tracking protocol), `results`, `analysis` (finder vs. search numbers),
`report` and `report_plot`, and `sweeper` (the Hydra `Sweeper` wiring them). Storages, pruners and
the study lock are the integrations layer's (`lrlab.integrations.optuna_storage`, `.locks`), shared
with the jobs."""
