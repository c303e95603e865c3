"""Video: stable track IDs, line counts, zone occupancy and dwell, events, privacy masks and drawings.

    from isseg.track import Tracker, Analytics, Privacy, load_zones
    tracker = Tracker()                          # one per stream
    analytics = Analytics(load_zones("zones.yaml"))
    privacy = Privacy(classes=("person",))
    for index, (frame, det) in enumerate(stream):  # det: every detection >= 0.1 of the frame
        tracked = tracker.update(det)            # track_ids set, masks kept
        events = analytics.update(tracked, timestamp=index / fps, frame_index=index, earlier=tracker.earlier)
        safe = privacy.apply(frame, det, tracked)  # a PrivateFrame: write safe.image, never frame
"""

from __future__ import annotations

from isseg.track.analytics import Analytics
from isseg.track.draw import draw_analytics
from isseg.track.events import Event, EventLog, WebhookSink, open_event_sink
from isseg.track.privacy import Privacy, PrivacyConfig, PrivateFrame, require_private
from isseg.track.tracker import Tracker
from isseg.track.tracker_config import TrackerConfig
from isseg.track.zones import Line, Zone, ZoneConfig, ZoneFileError, load_zones, parse_zones

__all__ = ["Analytics", "Event", "EventLog", "Line", "Privacy", "PrivacyConfig", "PrivateFrame", "Tracker",
           "TrackerConfig", "WebhookSink", "Zone", "ZoneConfig", "ZoneFileError", "draw_analytics",
           "load_zones", "open_event_sink", "parse_zones", "require_private"]
