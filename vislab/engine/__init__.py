"""The training engine: a small loop with hooks, optimizers and schedules, checkpoints."""
