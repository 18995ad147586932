"""The exceptions mlsys raises. One subclass per concern, all under MlsysError."""


class MlsysError(Exception):
    """Base class of every error mlsys raises on purpose."""


class SpecError(MlsysError, ValueError):
    """A spec field has a bad value. The message names the field, the value and the fix."""


class DataError(MlsysError, ValueError):
    """Input data is unusable: missing file or column, empty or malformed file."""


class StorageError(MlsysError):
    """A dataset or file could not be read or written."""


class ValidationFailed(MlsysError):
    """Data broke its schema. The offending version stays stored (quarantined)."""
