"""The one streaming engine: ordered, asynchronous inference over frames from any source, with resume, records,
COCO output, drawn images and videos, and per-source frame processors (tracking, zones, privacy)."""

from isseg.stream.engine import FrameProcessor, FrameResult, RunSummary, StreamEngine
from isseg.stream.options import StreamOptions, choose_mode, class_indices
from isseg.stream.run import run_stream

__all__ = ["FrameProcessor", "FrameResult", "RunSummary", "StreamEngine", "StreamOptions", "choose_mode",
           "class_indices", "run_stream"]
