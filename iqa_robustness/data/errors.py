"""The data layer's errors: each says what went wrong and what to do."""

from __future__ import annotations


class UnknownDatasetError(ValueError):
    """A dataset name that is neither registered nor an existing path."""


class DatasetNotFoundError(FileNotFoundError):
    """A known dataset whose files are not where the suite looks for them."""


class ImageReadError(ValueError):
    """One or more image files could not be decoded.

    Attributes:
        bad: image name -> reason, for every file that failed.
    """

    def __init__(self, message: str, bad: dict[str, str]) -> None:
        super().__init__(message)
        self.bad = bad
