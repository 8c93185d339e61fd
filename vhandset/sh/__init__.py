"""The virtual handset's ``/system/bin/sh``: a small POSIX-style interpreter, plus toybox.

Modules: :mod:`.syntax` (lexer, parser), :mod:`.interp` (the interpreter and its process),
:mod:`.command` (a command's context and table), :mod:`.streams`, :mod:`.builtins` and
:mod:`.applets`.

It parses what adbd hands to ``sh -c`` (quoting, ``;``, ``&&``, ``||``, pipes, redirections,
``$VAR``, ``$(...)``, globs, ``if``/``for``/``while``, here-documents) and runs each simple
command through a data-driven table of :class:`Command` entries, one small function each.
Commands are found the way mksh finds them: builtins first, then ``$PATH`` in the virtual
filesystem, where each binary is a file that names its applet. Errors read as on Android
(``/system/bin/sh: foo: inaccessible or not found``, exit 127).

:class:`Process` is the :class:`~vhandset.interface.ShellProcess`: the script runs in
a thread and its output is queued as ``(fd, bytes)`` chunks in the order it was written.
Pipeline stages run in threads joined by pipes, so ``logcat | grep`` streams. What the shell
needs from the phone is the :class:`ShellSystem` protocol, which ``device.VirtualDevice``
implements.
"""
