"""The phone's Android commands, one module per program family; importing the package fills
:data:`ANDROID`."""

from vhandset.cmds import am, dumpsys, logcat, pm, props, service, su, system
from vhandset.cmds.table import ANDROID

__all__ = ["ANDROID", "am", "dumpsys", "logcat", "pm", "props", "service", "su", "system"]
