"""Folder jobs: what the attacks, the defense and scoring share when they walk an INPUT_DIR.

Not part of the competition's contract (that is ``contract``): batching, the progress bar and
the JobReport that decides the exit status are this toolkit's own plumbing.
"""
