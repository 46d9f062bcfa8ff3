"""The one exception type for mistakes a user can fix (bad config, file, argument or data)."""


class PhasescopeError(Exception):
    """A user-facing error: its message is one line naming what was expected and what arrived.

    The CLI prints it as ``error: <message>`` and exits non-zero, without a traceback. Internal
    invariants use ``assert`` instead.
    """
