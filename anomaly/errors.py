"""The base class of the errors that mean "the user's input is wrong", not "genad is broken".

A `UserInputError` (a `ValueError`) carries a message meant for the person who gave the input:
the `genad` command line prints it as one line and exits 2. Any other exception escaping a
command is an internal error (exit 1). The user-facing errors of the packages inherit it:
dataset, column, model and output-folder errors, renamed or unknown settings, bad requests.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator


class UserInputError(ValueError):
    """Input the user gave (a file, a flag, a setting, a model name) is wrong; the message says
    what and, where it can, what to do instead."""


class InputNotFoundError(UserInputError, FileNotFoundError):
    """An input file or folder the user named does not exist."""


class ConfigError(UserInputError):
    """A setting the user gave (a config key, a flag, a parameter) is unknown or out of range."""


@contextlib.contextmanager
def user_settings() -> Iterator[None]:
    """Around code that validates settings the user gave (config `from_dict`, estimator
    parameter checks): a `ValueError` or `TypeError` raised inside is about those settings, so it
    is raised again as a `ConfigError` with the same message. Keep the block to the validation."""
    try:
        yield
    except UserInputError:
        raise
    except (ValueError, TypeError) as error:
        raise ConfigError(str(error)) from error
