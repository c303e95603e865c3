"""Helpers for tests and benchmarks, not for applications: seeded random models that behave like trained ones,
the coco-mini test images, detection equality checks, and ``isseg benchmark`` (its driver, measurements,
torchvision baseline, compute-ceiling probe and report)."""
