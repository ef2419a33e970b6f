"""The one error type morph raises for mistakes a user can fix."""


class MorphError(Exception):
    """A user-facing problem: the message is one line saying what is wrong and how to fix it."""
