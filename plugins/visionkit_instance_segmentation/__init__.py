"""visionkit_instance_segmentation: the built-in instance segmentation task (Mask R-CNN on the kit)."""
