"""The reports layer: what ``pyrovae evaluate`` and ``pyrovae diagnose`` compute and
write, and the figures of a run."""
