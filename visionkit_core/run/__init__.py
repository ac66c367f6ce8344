"""visionkit_core.run"""
