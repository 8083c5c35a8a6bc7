"""The Optuna side of a sweep: the space as distributions and grids (``space``),
samplers (``samplers``), the storage and study (``study``), what counts toward the
budget (``counting``), the process that owns a sqlite study (``owner``), and the trial
lifecycle with every private Optuna access (``lifecycle``)."""
