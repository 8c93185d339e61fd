"""mitmproxy addon: record flows into an auditor capture session.

    mitmdump -s addons/recorder.py --set auditor_session=captures/my-session

The addon is :class:`auditor.proxy.recorder.Recorder` (its options and what it records are
documented there); this file lets plain mitmdump load it from a checkout. ``auditor capture``
and ``auditor audit`` load the installed module's file instead, so they need no checkout.
"""

from auditor.proxy.recorder import Recorder

addons = [Recorder()]
