"""morph's version, in one place: the package, the CLI and every manifest say it."""

__version__ = "0.1.0"
