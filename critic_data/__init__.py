"""critic-data: verifiable preference-RL datasets for multimodal critics."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("critic-data")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"


class UserError(Exception):
    """A problem the user can fix (bad input, missing file, unreachable server).

    The CLI prints its message as one line and exits non-zero; no traceback.
    """
