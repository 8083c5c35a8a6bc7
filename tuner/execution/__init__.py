"""Execution: the sweep loop (``sweep``), the executor that turns a batch of trials into
compiled programs (``executor``), and the one way a front opens a sweep (``session``)."""
