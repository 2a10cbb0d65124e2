"""The commands' one-line error contract: a user's error (bad option, bad data, a file that cannot be read or
written, a full disk) is one line naming the file or value, exit status 2; only bugs are tracebacks."""
import sys

USAGE_ERROR = 2  # argparse's exit status for bad arguments; the commands use it for every user error


def error_line(error: BaseException) -> str:
    """`error` as one line: an OSError as '<file>: <reason>', anything else its message with lines joined."""
    if isinstance(error, OSError) and error.filename is not None and error.strerror:
        where = f"{error.filename}" + (f" -> {error.filename2}" if error.filename2 is not None else "")
        return f"{where}: {error.strerror}"
    text = str(error).strip() or type(error).__name__
    return " ".join(line.strip() for line in text.splitlines() if line.strip())


def report(prog: str, error: BaseException) -> int:
    """Print `prog: error: <one line>` to stderr; returns USAGE_ERROR for main() to return."""
    print(f"{prog}: error: {error_line(error)}", file=sys.stderr)
    return USAGE_ERROR
