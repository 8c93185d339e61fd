"""``auditor campaign``: one scenario on many handsets at once, compared in one matrix.

``run`` supervises one audit process per handset (``worker``), ``matrix`` builds the handset x
recipient table from the sessions' findings.json, ``report`` writes it as HTML, JSON and
Markdown, and ``cli`` is the command. ``docs/campaign.md`` describes the folder and the
matrix.
"""
