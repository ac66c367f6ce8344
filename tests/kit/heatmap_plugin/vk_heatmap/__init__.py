"""A test-only third-party plugin: heatmap keypoints over a registered feature backbone, on the kit."""
