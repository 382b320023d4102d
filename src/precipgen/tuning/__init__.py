"""Tuning: study presets and search spaces (:mod:`.space`, YAML in ``presets/``) and the
study itself (:mod:`.study`: storage, trials as nested MLflow runs, pruning, the best config)."""
