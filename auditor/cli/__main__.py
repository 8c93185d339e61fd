"""``python -m auditor.cli``: run the ``auditor`` command (the package is imported whole first,
so every command, campaign and fleet included, is on :data:`auditor.cli.main`)."""

from auditor.cli import main

main()
