"""Errors raised for bad input data, each naming the file (and the line or annotation) at fault."""


WORKER_PREFIX = "Caught "   # how torch's DataLoader re-raises a worker's exception: the type, a long message


class DataError(ValueError):
    """A dataset file is missing, unreadable or holds an invalid label; the message names the file.

    Raised in a DataLoader worker, torch re-raises it in the main process as `DataError("Caught DataError in
    DataLoader worker process 0. Original Traceback ... DataError: <message>")`; the constructor keeps only
    <message>, so workers=2 reports the same one line as workers=0."""

    def __init__(self, *args):
        if len(args) == 1 and isinstance(args[0], str) and args[0].startswith(WORKER_PREFIX):
            args = (_original_message(args[0], type(self)),)
        super().__init__(*args)


def _original_message(text, cls):
    """The original message from the last line of a worker's traceback: '<module>.<Class>: <message>'."""
    if "\nOriginal Traceback" not in text:
        return text
    last = text.rstrip().splitlines()[-1]
    for klass in cls.__mro__:
        prefix = f"{klass.__module__}.{klass.__qualname__}: "
        if last.startswith(prefix):
            return last[len(prefix):]
    return text


class MissingDataError(DataError, FileNotFoundError):
    """A path named by the data config or an annotation file does not exist.

    Both a `DataError` (bad input) and a `FileNotFoundError`, so callers may catch either.
    """
