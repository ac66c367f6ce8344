"""Built-in plugin visionkit_sweep: ``visionkit sweep``, hyperparameter search over ``train`` runs.

Optuna runs the search (TPE, random or grid sampling; median or Hyperband pruning on the
task's monitored validation metric); every trial is an ordinary ``visionkit train`` run
directory under ``SWEEP_DIR/trials/<number>/``. The study lives in ``SWEEP_DIR/study.db``
(SQLite) unless ``--storage`` names another database, so a killed sweep continues with
``--resume``. ``--backend ray`` runs the trials as Ray tasks. Optuna and Ray are optional
extras (``visionkit[sweep]``, ``visionkit[ray]``) imported only when the command runs.
"""
