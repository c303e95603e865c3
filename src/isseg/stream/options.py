"""What a streaming run does, as one typed object, and the choices made before the model is loaded."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from isseg.sources.frames import ReadOptions
from isseg.sources.inputs import Source

RECORDS_NAME = "results.jsonl"
ClassSpec = str | Sequence[str | int] | None


@dataclass(frozen=True)
class StreamOptions:
    """Options of :class:`isseg.stream.StreamEngine`.

    Attributes:
        output: folder of the outputs; None writes nothing (iterate :meth:`StreamEngine.results` instead).
        write_images: a drawn picture per image and a drawn ``<name>.mp4`` per video, camera or stream.
        write_records: ``results.jsonl`` (a record per image or frame, streamed as computed) and, at the end,
            ``results.json`` (COCO results) and ``images.json``.
        masks: paste the masks (False: boxes only, faster; no segmentation in the records).
        classes: class names or indices to keep ("person,car", ["person", 2]); None: all.
        resume: skip the inputs already in the output's records (a failed one is tried again); the frames of a
            video already done are not inferred again but drawn from their records.
        read: how frames are read (limit, stride, live mode, reconnection): :class:`isseg.sources.ReadOptions`.
        progress: show a progress bar.
    """

    output: str | Path | None = "isseg_predictions"
    write_images: bool = True
    write_records: bool = True
    masks: bool = True
    classes: ClassSpec = None
    resume: bool = False
    read: ReadOptions = field(default_factory=ReadOptions)
    progress: bool = False

    def __post_init__(self) -> None:
        if self.resume and not (self.output and self.write_records):
            raise ValueError(f"resume reads OUTPUT/{RECORDS_NAME}, which is not written without an output folder "
                             "and records")
        if self.output is not None and not self.write_records and not self.write_images:
            raise ValueError("write_records=False and write_images=False together would write nothing")


def class_indices(spec: ClassSpec, class_names: Sequence[str], option: str = "--classes") -> tuple[int, ...] | None:
    """Class names or indices -> sorted class indices (None: all); one error listing the valid names."""
    if spec is None or spec == "":
        return None
    parts = [p.strip() for p in spec.split(",")] if isinstance(spec, str) else [str(p).strip() for p in spec]
    keep: set[int] = set()
    for part in (p for p in parts if p):
        if part.isdigit():
            if int(part) >= len(class_names):
                raise ValueError(f"{option}: index {part} out of range (0..{len(class_names) - 1})")
            keep.add(int(part))
        elif part in class_names:
            keep.add(list(class_names).index(part))
        else:
            listed = ", ".join(class_names[:100]) + (", ..." if len(class_names) > 100 else "")
            raise ValueError(f"{option}: unknown class {part!r}; the model's classes are: {listed}")
    return tuple(sorted(keep))


def choose_mode(mode: str, backend: str, sources: Sequence[Source], probe: Callable[[], str] | None = None) -> str:
    """``mode="auto"``: latency for a single image (nothing to overlap) and for live sources (the newest frame
    matters, not the rate); for OpenVINO on more than one image or on a video file, the faster of the two modes
    on this machine as ``probe`` measures it (:func:`isseg.deploy.mode_probe.faster_mode`), throughput without
    one (docs/deploy.md, "`isseg predict`"). Other backends run one at a time."""
    if mode != "auto":
        return mode
    if backend != "openvino" or any(s.live for s in sources):
        return "latency"
    images = sum(1 for s in sources if s.kind == "image")
    if images > 1 or any(s.kind == "video" for s in sources):
        return probe() if probe is not None else "throughput"
    return "latency"
