"""The training engine: ``train.py`` wires config → run, ``loop.py`` is the step loop (identical for every
distribution engine), ``hooks.py`` observes it (logs, verification, checkpoints), ``checkpoint.py`` writes
and reads run directories atomically, ``schedule.py`` holds the step arithmetic.

Importing this package imports nothing heavy; import the submodules you need.
"""
