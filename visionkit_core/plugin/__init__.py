"""visionkit_core.plugin"""
