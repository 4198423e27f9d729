"""The training layer: the step, the epoch loop, schedules, checkpoints, run folders
and data-parallel training under torchrun."""
