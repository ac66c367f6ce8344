"""visionkit_detection: object detection as a visionkit task (COCO and YOLO data, torchvision detectors)."""
