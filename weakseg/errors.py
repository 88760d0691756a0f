"""User-facing errors: expected failures that the CLI reports as one line, without a traceback."""


class WeaksegError(Exception):
    """An expected error caused by input (a file, an option); its message names the culprit."""


class DataError(WeaksegError):
    """A dataset file is missing, malformed or inconsistent."""


class CheckpointError(WeaksegError):
    """A checkpoint is missing, corrupt or does not match the requested model."""
