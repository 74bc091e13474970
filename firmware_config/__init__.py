"""The doorbell's configuration: the YAML schema, its defaults and its checks.

`load_config(path)` returns a frozen `Config` or raises `ConfigError` listing every
problem found, each with its key path. The config holds the parts' own settings
(`CameraSettings`, `StorageSettings`, `MqttSettings`, `ShareSettings`), built directly
from one declaration per key (firmware_config/schema.py). The documented example ships
as package data (`doorbell.example.yaml`), so nothing reads repository-relative paths
at run time.
"""

from firmware_config.schema import (
    Config,
    ConfigError,
    ControlConfig,
    DeviceConfig,
    OwnerConfig,
    RfaConfig,
    TrustedAgency,
    example_config_text,
    load_config,
    parse_config,
)

__all__ = [
    "Config",
    "ConfigError",
    "ControlConfig",
    "DeviceConfig",
    "OwnerConfig",
    "RfaConfig",
    "TrustedAgency",
    "example_config_text",
    "load_config",
    "parse_config",
]
