"""The inference client's errors that the operator must act on: the message says what, and the command exits with it
instead of a traceback."""


class ClientError(RuntimeError):
    """A problem the operator must fix (no night folder, no model...); the message says what."""


class NightError(ClientError):
    """A problem of one night's folder or scores CSV: the other nights of a run can still be scored."""


class UsageError(ClientError):
    """Settings or options the command cannot run with (a real-time window past noon, --catch-up without a scores
    folder): exit status 2, as invalid settings."""
