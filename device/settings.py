"""Maps the config onto the settings each part takes, so parts never import the config.
(The config's `mqtt` needs no mapping: it is the sync part's `MqttSettings` itself.)"""

from __future__ import annotations

from typing import cast

from firmware_config import Config
from recorder.settings import CameraSettings, SourceKind, StorageSettings


def camera_settings(config: Config) -> CameraSettings:
    cam = config.camera
    return CameraSettings(
        source=cast(SourceKind, cam.source),
        device=cam.device,
        width=cam.width,
        height=cam.height,
        fps=cam.fps,
        preset=cam.preset,
        masks=getattr(cam, "masks", ()),  # camera.masks: added with the new schema
    )


def storage_settings(config: Config) -> StorageSettings:
    sto = config.storage
    return StorageSettings(
        dir=config.buffer_dir,
        segment_seconds=sto.segment_seconds,
        max_age_hours=sto.max_age_hours,
        max_bytes=sto.max_bytes,
        min_free_bytes=sto.min_free_bytes,
    )
