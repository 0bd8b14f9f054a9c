"""Training engine pieces: a trainer with atomic checkpoints, resumption and one-line data errors."""
