"""Domain errors: raised by domain code, mapped to HTTP in one place (main.py)."""


class MemsvcError(Exception):
    """Base of the errors a client can be told about."""


class NotFound(MemsvcError):
    pass


class Conflict(MemsvcError):
    pass


class Invalid(MemsvcError):
    pass


class Unauthorized(MemsvcError):
    pass


class Forbidden(MemsvcError):
    pass


class Unavailable(MemsvcError):
    pass


class RateLimited(MemsvcError):
    """Too many requests for one key; the client may try again after `retry_after_s`."""

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s
