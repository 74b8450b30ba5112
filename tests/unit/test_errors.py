"""One error hierarchy: every error the daemon raises on purpose has StablehandError as
its root, and each HTTP error carries the status the edge answers with."""

from __future__ import annotations

import pytest

from daemon import errors
from daemon.config import ConfigError
from daemon.lifecycle import StartupError
from daemon.output import OutputOverrun
from daemon.registry import DuplicateKey, RegistryError, StorageError, UnknownColumn, WriteRejected
from daemon.service import StartupError as ServiceStartupError
from daemon.statedir import LockHeld, StateDirError
from daemon.tokens import TokenFileError


@pytest.mark.parametrize("error", [
    RegistryError, StorageError, WriteRejected, DuplicateKey, UnknownColumn, ConfigError,
    StartupError, TokenFileError, StateDirError, LockHeld, OutputOverrun, errors.ApiError,
])
def test_the_daemons_own_errors_share_one_root(error: type[Exception]) -> None:
    assert issubclass(error, errors.StablehandError)


def test_http_errors_carry_their_status() -> None:
    statuses = {cls.__name__: cls.status for cls in (
        errors.BadRequest, errors.Unauthorized, errors.Forbidden, errors.NotFound, errors.Conflict,
        errors.UriTooLong, errors.UnsupportedMediaType, errors.Unavailable, StorageError, WriteRejected)}
    assert statuses == {"BadRequest": 400, "Unauthorized": 401, "Forbidden": 403, "NotFound": 404,
                        "Conflict": 409, "UriTooLong": 414, "UnsupportedMediaType": 415,
                        "Unavailable": 503, "StorageError": 503, "WriteRejected": 400}


def test_a_bug_is_not_taken_for_a_storage_failure() -> None:
    """Callers treat a RegistryError as storage trouble (keep the record unsaved, retry):
    a write naming no column is a bug and must not be retried forever."""
    assert not issubclass(UnknownColumn, RegistryError)
    assert ServiceStartupError is StartupError
