"""The input layer: inputs -> sources, the one decoder's checks, frames of videos, and live streams from real
servers on loopback (GStreamer's RTSP server, ffmpeg's HTTP server): newest-frame mode, reconnection."""

from __future__ import annotations

import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from isseg.sources import (
    Frame,
    ImageTooLarge,
    ReadOptions,
    Source,
    decode_image,
    expand_inputs,
    iter_frames,
    read_image_file,
)
from isseg.sources.frames import live_frames, video_frames
from isseg.testing.streams import HttpStreamServer, RtspServer, ffmpeg_available, rtsp_available


def _clip(path: Path, frames: int = 12, size: tuple[int, int] = (96, 128), fps: int = 10) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, size[::-1])
    for i in range(frames):
        image = np.full((*size, 3), 40, np.uint8)
        cv2.putText(image, str(i), (10, 60), cv2.FONT_HERSHEY_SIMPLEX, 1.5, (255, 255, 255), 3)
        writer.write(image)
    writer.release()
    return path


def test_inputs_become_ordered_sources(tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("b.jpg", "a.png"):
        cv2.imwrite(str(photos / name), np.zeros((8, 8, 3), np.uint8))
    (photos / "notes.md").write_text("not an image")
    clip = _clip(tmp_path / "clip.avi", 2)
    (tmp_path / "list.txt").write_text("# images\nphotos/a.png\n\n/abs/x.jpg\n")
    (tmp_path / "cams.streams").write_text("rtsp://10.0.0.5/live\n0\nclip.avi\nhttp://cam/video.mjpg\nnot a url\n")
    sources, errors = expand_inputs([str(photos), str(clip), str(tmp_path / "list.txt"), "3",
                                     "rtsp://127.0.0.1:8554/live", "http://host/hls/index.m3u8",
                                     str(tmp_path / "cams.streams"), str(tmp_path / "*.avi"), str(tmp_path / "none")])
    assert [(s.kind, Path(s.location).name) for s in sources[:5]] == [
        ("image", "a.png"), ("image", "b.jpg"), ("video", "clip.avi"), ("image", "a.png"), ("image", "x.jpg")]
    assert [(s.kind, s.location) for s in sources[5:8]] == [
        ("camera", "3"), ("stream", "rtsp://127.0.0.1:8554/live"), ("stream", "http://host/hls/index.m3u8")]
    assert [s.kind for s in sources[8:12]] == ["stream", "camera", "video", "stream"]
    assert sources[12] == Source("video", str(clip))
    assert [s.name for s in sources[5:8]] == ["camera3", "live", "index.m3u8"]
    assert errors == [(str(tmp_path / "cams.streams"), "line 5: expected a stream URL (rtsp://, rtmp://, http://...), "
                                                       "a camera index or a video file, got 'not a url'"),
                      (str(tmp_path / "none"), "no such file, folder, camera or stream")]
    assert Source("camera", "0").live and not Source("video", "v.mp4").live
    with pytest.raises(ValueError, match="unknown source kind 'tape'"):
        Source("tape", "x")


def test_one_decoder_one_line(tmp_path: Path) -> None:
    ok, jpeg = cv2.imencode(".jpg", np.random.default_rng(0).integers(0, 255, (40, 60, 3), dtype=np.uint8))
    data = jpeg.tobytes()
    path = tmp_path / "cut.jpg"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError) as from_file:
        read_image_file(path)
    with pytest.raises(ValueError) as from_bytes:
        decode_image(path.read_bytes(), str(path))
    assert str(from_file.value) == str(from_bytes.value)
    assert str(from_file.value).startswith(f"{path}: truncated JPEG: no end-of-image marker")
    with pytest.raises(ImageTooLarge, match=r"upload.jpg: 60x40 pixels is more than the limit of 1,000"):
        decode_image(data, "upload.jpg", max_pixels=1000)  # from the header, before decoding
    assert decode_image(data, "x", reduce=4).shape == (10, 15, 3)
    with pytest.raises(FileNotFoundError, match="image file not found"):
        read_image_file(tmp_path / "missing.png")
    with pytest.raises(ValueError, match="is a folder"):
        read_image_file(tmp_path)


def test_video_frames_stride_limit_and_time(tmp_path: Path) -> None:
    clip = Source("video", str(_clip(tmp_path / "clip.avi", 12, fps=10)))
    frames = list(video_frames(clip, ReadOptions(stride=3, limit=3)))
    assert [f.index for f in frames] == [0, 3, 6]
    assert [f.timestamp for f in frames] == pytest.approx([0.0, 0.3, 0.6])  # the frame's position in the video
    assert all(f.fps == pytest.approx(10 / 3) and f.image.shape == (96, 128, 3) for f in frames)
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video")
    (frame,) = list(video_frames(Source("video", str(bad))))
    assert frame.image is None and str(bad) in str(frame.error)
    image = tmp_path / "a.png"
    cv2.imwrite(str(image), np.zeros((8, 8, 3), np.uint8))
    kinds = [(f.source.kind, f.index) for f in iter_frames([clip, Source("image", str(image))], ReadOptions(limit=2))]
    assert kinds == [("image", None), ("video", 0), ("video", 1)]  # still images first, then videos


@pytest.mark.skipif(rtsp_available() is not None, reason=str(rtsp_available()))
def test_rtsp_newest_frame_mode_never_lags() -> None:
    """A consumer three times slower than the stream: in newest mode every frame it gets is fresh (captured just
    before it is taken) and the skipped ones are counted; lag does not grow."""
    with RtspServer(fps=15) as server:
        ages, indices = [], []
        frames = live_frames([Source("stream", server.url)], ReadOptions(limit=40, open_timeout=5), lambda m: None)
        for frame in frames:
            assert frame.error is None, frame.error
            ages.append(time.time() - frame.captured)
            indices.append(frame.index)
            if len(ages) == 8:
                break
            time.sleep(0.2)  # 3 frames of the stream per frame taken
        frames.close()
    assert max(ages[2:]) < 0.15, ages  # each frame taken was read within the last frame interval or so
    steps = np.diff(indices)[2:]  # (the first steps include the burst a stream gives when it opens)
    assert all(2 <= s <= 5 for s in steps), indices  # ~3 stream frames per frame taken: dropped, not queued


@pytest.mark.skipif(rtsp_available() is not None, reason=str(rtsp_available()))
def test_rtsp_reconnects_after_the_server_is_killed() -> None:
    server = RtspServer(fps=15).start()
    messages: list[str] = []
    got: list[Frame] = []
    try:
        frames = live_frames([Source("stream", server.url)],
                             ReadOptions(live_mode="buffered", open_timeout=2, max_backoff=0.5), messages.append)
        for frame in frames:
            assert frame.error is None, frame.error
            got.append(frame)
            if len(got) == 5:
                server.stop()
                time.sleep(0.5)
                server.start()  # the same port
            if any(f.gap is not None for f in got) and len(got) >= 12:
                break
        frames.close()
    finally:
        server.stop()
    gaps = [f.gap for f in got if f.gap is not None]
    assert len(gaps) == 1 and gaps[0] > 0.4, gaps
    assert any("stream lost; reconnecting" in m for m in messages)
    assert any("reconnected after" in m for m in messages), messages


@pytest.mark.skipif(ffmpeg_available() is not None, reason=str(ffmpeg_available()))
def test_http_mpegts_stream_and_an_unreachable_one(tmp_path: Path) -> None:
    clip = _clip(tmp_path / "clip.avi", 20, fps=10)
    with HttpStreamServer(clip) as server:
        sources = [Source("stream", server.url), Source("stream", "rtsp://127.0.0.1:9/nothing")]
        messages: list[str] = []
        frames = list(live_frames(sources, ReadOptions(limit=5, open_timeout=2), messages.append))
    good = [f for f in frames if f.source == sources[0]]
    bad = [f for f in frames if f.source == sources[1]]
    assert len(good) == 5 and all(f.image.shape == (96, 128, 3) for f in good)
    assert len(bad) == 1 and str(bad[0].error) == "rtsp://127.0.0.1:9/nothing: cannot open this stream"
