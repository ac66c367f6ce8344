"""visionkit_segmentation: semantic segmentation as a plugin task (smp and torchvision models)."""
