"""Training: the loop, its schedule, run folders, progress output and evaluation."""
