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
