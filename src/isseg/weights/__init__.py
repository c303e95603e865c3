"""Checkpoints: isseg's own format, torchvision / detectron2 / mmdetection layouts, named weights."""
