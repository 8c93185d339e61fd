"""``python -m auditor.packets._worker``: the name worker of :mod:`auditor.packets.flows`.

A module of its own, so that the interpreter compiles only these lines as ``__main__``;
:mod:`auditor.packets.workerpipe`, which does the work, is imported from its cached bytecode.
Frames go to a copy of stdout; stdout itself then points at stderr, so nothing printed by
accident can corrupt them. Once its answer is sent it exits at once (``os._exit``): tearing
down the interpreter would only free, one by one, the objects it built, while the reading
process waits."""

from __future__ import annotations

import os
import sys

from auditor.packets.workerpipe import serve

if __name__ == "__main__":
    frames = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    status = serve(sys.stdin.buffer, frames)
    frames.close()
    sys.stderr.flush()
    os._exit(status)  # its answer is sent: no teardown of everything it built
