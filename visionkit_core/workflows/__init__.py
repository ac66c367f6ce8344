"""Checkpoint workflows for any task: validate, test, predict and export from a checkpoint alone."""
