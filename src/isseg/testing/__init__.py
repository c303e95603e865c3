"""Helpers for tests and benchmarks, not for applications: seeded random models that behave like trained ones,
the coco-mini test images, the torchvision reference runner and the compute-ceiling probe of ``isseg benchmark``."""
