"""The one input layer: every input (files, folders, globs, manifests, fsspec URIs, videos, cameras, stream
URLs) becomes ordered :class:`Source` items and then :class:`Frame` objects, and every image is decoded by
:func:`decode_image`."""

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
from isseg.sources.frames import Frame, ReadOptions, iter_frames
from isseg.sources.inputs import VIDEO_SUFFIXES, Source, expand_inputs

__all__ = ["IMAGE_SUFFIXES", "MAX_PIXELS", "VIDEO_SUFFIXES", "Frame", "ImageLike", "ImageTooLarge", "ReadOptions",
           "Source", "decode_image", "expand_inputs", "is_uri", "iter_frames", "read_bytes", "read_image",
           "read_image_file"]
