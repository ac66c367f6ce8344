"""The built-in keypoints plugin: Keypoint R-CNN on the kit (COCO keypoints, YOLO-pose, a rendered demo)."""
