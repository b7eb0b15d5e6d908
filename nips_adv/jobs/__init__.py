"""Folder jobs: what the attacks, the defense and scoring share when they walk an INPUT_DIR.

Not part of the competition's contract (that is ``contract``): batching, the progress bar and
the JobReport that decides the exit status, and the time budget that fits a job into the contract's
limit (``time_budget``), are this toolkit's own plumbing.
"""
