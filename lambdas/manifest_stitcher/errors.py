"""Errors of the stitch contract.

Each class name is the error name a Step Functions workflow sees (Lambda puts
the exception's class name in ``errorType``), so a workflow can Retry or Catch
by name. Every message names the bad value and what was expected.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

# A URL's query string (``?a=b&...``): pre-signed blob URLs (S3, CloudFront) carry
# their signature, credential and session token there.
_QUERY = re.compile(r"\?[^\s'\"()<>]*=[^\s'\"()<>]*")


def redact_query(text: str) -> str:
    """``text`` with every URL query string replaced, so no pre-signed URL reaches a message."""
    return _QUERY.sub("?<query redacted>", text)


class StitchError(Exception):
    """Base of every error the stitcher raises on purpose."""

    #: Exit status of the ``ecr-multiarch`` command line for this error.
    exit_code: int = 1

    def __init__(self, message: str, *, moved_tags: Sequence[str] = ()) -> None:
        super().__init__(message)
        #: Tags that already point at the new index when a later tag failed.
        self.moved_tags: tuple[str, ...] = tuple(moved_tags)

    @property
    def error_name(self) -> str:
        """The Step Functions error name (the class name)."""
        return type(self).__name__

    def after_moving(self, moved_tags: Sequence[str], digest: str) -> StitchError:
        """The same error, saying which tags were already moved to ``digest`` before it.

        The one wording of a partial write: the stitch writes tags in order and a
        later tag can fail after earlier ones moved; the workflow and the user need
        to know which.
        """
        if not moved_tags:
            return self
        moved = tuple(moved_tags)
        error = type(self)(
            f"{self}; tags already moved to {digest}: {', '.join(moved)}", moved_tags=moved
        )
        error.__cause__ = self.__cause__
        return error


class InvalidStitchRequest(StitchError):
    """The request does not fit the contract; nothing was read or written."""

    exit_code = 2


class ImageNotFound(StitchError):
    """A digest or tag is not in the repository."""

    exit_code = 3


class PlatformConflict(StitchError):
    """Two children resolve to the same (normalized) platform."""

    exit_code = 4


class UnsupportedMediaType(StitchError):
    """A child (or an entry of a child index) cannot be stitched.

    It is neither an image manifest nor an image index of image manifests, its bytes
    do not match its digest, its media type or its size (an integrity failure: never
    retried), or the index would be too big.
    """

    exit_code = 4


class TagImmutable(StitchError):
    """A tag already points at another image in an immutable repository."""

    exit_code = 5


class RegistryUnavailable(StitchError):
    """Throttling, server or network errors that still failed after retries, or the
    stitch's deadline passed (the message names the request that was slow)."""

    exit_code = 6


class RegistryAccessDenied(StitchError):
    """The registry (or the ECR API) refused the credentials, or none could be found."""

    exit_code = 7


ERRORS: tuple[type[StitchError], ...] = (
    InvalidStitchRequest,
    ImageNotFound,
    PlatformConflict,
    UnsupportedMediaType,
    TagImmutable,
    RegistryUnavailable,
    RegistryAccessDenied,
)
"""Every error of the stitch contract, in the order of the contract's error table."""

RETRIED_ERRORS: tuple[type[StitchError], ...] = (RegistryUnavailable,)
"""The errors a workflow may retry: passing faults of the registry, never bad input or integrity."""
