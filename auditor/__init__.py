"""auditor: a host-side auditor of the telemetry that Android handsets send."""

__version__ = "0.1.0"
