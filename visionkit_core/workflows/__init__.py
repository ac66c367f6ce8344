"""visionkit_core.workflows"""
