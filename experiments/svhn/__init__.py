"""The SVHN study: `python -m experiments.svhn` (the CLI, `__main__.py`) and its comparison report (`report.py`).

Nothing is imported here, so running the package as a program loads its CLI only once."""
