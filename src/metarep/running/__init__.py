"""Running one config: the memory check before allocating, the run into a run directory
with checkpoints, progress display."""
