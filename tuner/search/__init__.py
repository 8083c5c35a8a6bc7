"""The Optuna side of a sweep: the space as distributions and grids (``space``),
samplers (``samplers``), the storage and study (``study``), and the trial
lifecycle with every private Optuna access (``lifecycle``)."""
