"""The one input layer: every input (files, folders, globs, manifests, fsspec URIs, videos, cameras, stream
URLs) becomes ordered items, and every image is decoded by :func:`decode_image`."""

from isseg.sources.decode import (
    IMAGE_SUFFIXES,
    MAX_PIXELS,
    ImageLike,
    ImageTooLarge,
    decode_image,
    is_uri,
    read_bytes,
    read_image,
    read_image_file,
)

__all__ = ["IMAGE_SUFFIXES", "MAX_PIXELS", "ImageLike", "ImageTooLarge", "decode_image", "is_uri", "read_bytes",
           "read_image", "read_image_file"]
