"""Training: optimiser and schedules, the loop, checkpoints, distributed setup."""
