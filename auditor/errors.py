"""The one error family of auditor. The CLI turns these into one clear line and a non-zero exit."""


class AuditorError(Exception):
    """Base class for errors a user can act on."""


class SessionError(AuditorError):
    """A capture session folder is missing, malformed or cannot be written."""


class CaptureError(AuditorError):
    """The capture process (mitmdump) could not be started or failed."""


class DeviceError(AuditorError):
    """The handset cannot be reached or refused an operation."""


class ScenarioError(AuditorError):
    """A scenario file is malformed."""
