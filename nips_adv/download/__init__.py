"""Downloads: the competition datasets (``dataset``) and the reference checkpoints (``checkpoints``)."""
