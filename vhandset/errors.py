"""The one error family of the virtual handset: a profile, plan or catalogue it cannot load.

Deliberately not auditor's ``AuditorError``: the double does not import the product. The two
commands that start it (``auditor simulate`` and ``auditor demo``) turn it into their own
one-line error.
"""


class VhandsetError(Exception):
    """Base class for errors in the virtual handset's data a user can act on."""
