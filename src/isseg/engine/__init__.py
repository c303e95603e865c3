"""Training, evaluation and COCO metrics."""
