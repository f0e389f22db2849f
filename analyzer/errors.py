"""The analyzer's own errors (no heavy imports: the CLI needs them before anything else).

``analyzer.model`` re-exports them; ``except BadInputError`` works with either import.
"""


class AnalyzerError(Exception):
    """Base class of the analyzer's own errors."""


class BadInputError(AnalyzerError):
    """The input cannot be analysed (truncated, malformed, wrong format). CLI exit code 2."""


class NotATraceError(BadInputError):
    """The file is not a trace at all (a JSON without ``traceEvents``, an unrelated SQLite
    database): inside a directory it is skipped with a note, unlike a damaged trace."""


__all__ = ["AnalyzerError", "BadInputError", "NotATraceError"]
