"""The errors c2l knows about.

Every error a user can cause or meet (bad input, a missing or corrupt file, a network failure, a
model mismatch) is a :class:`C2LError`. The CLI's one error handler prints ``error: <message>`` on
stderr and exits with :attr:`C2LError.exit_code`; any other exception is a bug and shows a traceback.
"""

from __future__ import annotations


class C2LError(Exception):
    """A known runtime error: printed as one line, exit code 1."""

    exit_code = 1


class UsageError(C2LError):
    """Bad option values or arguments: exit code 2, like a command-line parse error."""

    exit_code = 2


class DownloadError(C2LError):
    """A download failed (network error, HTTP error, server gone)."""


class ChecksumError(DownloadError):
    """A file's size or sha256 does not match what it must be."""


class OfflineError(C2LError):
    """A file is needed but offline mode forbids fetching it."""


class FormatError(C2LError):
    """A file is not of the expected format, is truncated, corrupt, or refused as unsafe."""


class ModelMismatchError(C2LError):
    """Two models (or a model and a file) that must agree in shape do not."""


class DeviceError(C2LError):
    """A requested device is not available."""


class C2LWarning(UserWarning):
    """A warning c2l gives the user (shown by the CLI as one ``warning: …`` line on stderr)."""
