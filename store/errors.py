"""Domain errors raised by store/ and translated to HTTP in one place (handlers/base.py)."""


class StoreError(Exception):
    """Base of the errors a handler may translate."""


class NotFound(StoreError):
    pass


class StoreUnavailable(StoreError):
    """MongoDB or Redis could not be reached; requests should fail closed."""


class RateLimited(StoreError):
    def __init__(self, retry_after: int | None = None):
        super().__init__("rate limited")
        self.retry_after = retry_after


class OutOfCredits(StoreError):
    pass
