"""The one error type morph raises for mistakes a user can fix."""


class MorphError(Exception):
    """A user-facing problem: the message is one line saying what is wrong and how to fix it."""


def did_you_mean(word: str, known: list[str], n: int = 2, normal=lambda name: name) -> str:
    """'did you mean A or B? ' for the names of `known` close to a mistyped `word` (compared as `normal` writes
    both, e.g. lower case); '' when none is."""
    import difflib

    names = {normal(name): name for name in known}
    close = difflib.get_close_matches(normal(word), list(names), n=n, cutoff=0.6)
    return f"did you mean {' or '.join(names[c] for c in close)}? " if close else ""
