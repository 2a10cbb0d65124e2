"""Errors raised for bad input data, each naming the file (and the line or annotation) at fault."""


class DataError(ValueError):
    """A dataset file is missing, unreadable or holds an invalid label; the message names the file."""


class MissingDataError(DataError, FileNotFoundError):
    """A path named by the data config or an annotation file does not exist.

    Both a `DataError` (bad input) and a `FileNotFoundError`, so callers may catch either.
    """
