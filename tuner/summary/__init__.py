"""After the loop: the parent run's summary (``finalize``), its plots (``plots``) and the
best configuration refit as a model (``model``)."""
