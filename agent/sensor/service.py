"""Drive a Sensor from a capture file or a live interface."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from agent.sensor.capture import PcapFrames, live_frames
from agent.sensor.config import SensorConfig
from agent.sensor.engine import Detection, Sensor

PUBLISH_EVERY = 65_536  # packets between metric pushes in a long file


def read_file(path: str | Path, cfg: SensorConfig, sink: Callable[[Detection], None] | None = None) -> Sensor:
    """Classify a whole capture; returns the sensor (its stats, and its detections when no sink)."""
    sensor = Sensor(cfg, sink)
    frames = PcapFrames(path)
    feed = sensor.feed
    for n, (ts, data, linktype, snapped) in enumerate(frames, 1):
        feed(ts, data, linktype, snapped)
        if n % PUBLISH_EVERY == 0:
            sensor.publish()
    sensor.incomplete_file = not frames.complete  # type: ignore[attr-defined]
    sensor.finish()
    return sensor


def run_live(iface: str, cfg: SensorConfig, sink: Callable[[Detection], None] | None = None,
             bpf: str | None = None, seconds: float | None = None, count: int | None = None,
             stop: Callable[[], bool] | None = None, publish_seconds: float = 5.0,
             ready: Callable[[], None] | None = None) -> Sensor:
    """Watch an interface until `seconds`/`count`/`stop()`; flows left open are settled at the end."""
    sensor = Sensor(cfg, sink)
    deadline = time.monotonic() + seconds if seconds else None
    next_publish = time.monotonic() + publish_seconds

    def done() -> bool:
        return bool((stop and stop()) or (deadline and time.monotonic() >= deadline)
                    or (count and sensor.packets >= count))

    for ts, data, linktype, snapped in live_frames(iface, bpf, done, ready=ready):
        sensor.feed(ts, data, linktype, snapped)
        now = time.monotonic()
        if now >= next_publish:
            sensor.table.sweep(ts)
            sensor.publish()
            next_publish = now + publish_seconds
    sensor.finish()
    return sensor
