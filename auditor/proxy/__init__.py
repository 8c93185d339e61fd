"""The proxy side of a capture: mitmdump run with the recorder addon, the addon itself, and the
conversion of mitmproxy's flows into auditor's records.

- :mod:`auditor.proxy.capture`: runs mitmdump as a child process and follows the session;
- :mod:`auditor.proxy.recorder`: the mitmproxy addon that writes the session (mitmdump loads
  this module's file with ``-s``; ``addons/recorder.py`` is the same addon for a checkout);
- :mod:`auditor.proxy.mitmconv`: mitmproxy objects to auditor records, shared with imports of
  mitmproxy flow files.
"""
