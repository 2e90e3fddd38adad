"""The exceptions qretrain raises for bad input: a user's error, never a bug.

The command line turns these (and only these, plus I/O errors) into one line on
stderr and exit code 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class QretrainError(ValueError):
    """Bad input: says what was wrong, what was expected and how to fix it."""


class QretrainFileError(QretrainError):
    """A file that is not a sound qretrain model file; names the file and the cause."""


class UntrustedCodeError(QretrainFileError):
    """A file or record names code to run, and the caller did not trust it."""
