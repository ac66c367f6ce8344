"""visionkit_core.training"""
