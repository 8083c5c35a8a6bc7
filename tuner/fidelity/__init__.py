"""Multi-fidelity: trials trained in segments of epochs, stopped when they will not win.

- ``pruners``: Optuna's pruner from the spec, and the epochs at which it can decide
  (segments end there, so no decision waits longer than a rung);
- ``early_stopping``: a trial's own stop, on its fold-mean validation curve;
- ``scheduler``: which live trials train next, from which epoch to which.
"""
