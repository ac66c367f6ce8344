"""Checkpoint workflows for any task: validate, test and predict from a checkpoint alone."""
