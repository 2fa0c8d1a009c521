"""Domain errors. Each carries its HTTP status; one handler in api/ renders them."""

from __future__ import annotations


class DomainError(Exception):
    status_code = 400
    detail = "bad request"
    headers: dict[str, str] | None = None

    def __init__(self, detail: str | None = None) -> None:
        if detail is not None:
            self.detail = detail
        super().__init__(self.detail)


class NotFound(DomainError):
    status_code = 404
    detail = "not found"


class Conflict(DomainError):
    status_code = 409
    detail = "conflict"


class Invalid(DomainError):
    status_code = 422
    detail = "invalid request"


class QuestInvalid(Invalid):
    """A quest definition a designer must fix: `field` names the part, the detail says why."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


class Unauthorized(DomainError):
    status_code = 401
    detail = "not authenticated"
    headers = {"WWW-Authenticate": "Bearer"}


class Forbidden(DomainError):
    status_code = 403
    detail = "forbidden"


class Banned(Forbidden):
    detail = "user is banned"


class TooManyAttempts(DomainError):
    status_code = 429
    detail = "too many failed login attempts"

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"too many failed login attempts; retry in {retry_after} s")
        self.headers = {"Retry-After": str(retry_after)}


class TooManySignIns(TooManyAttempts):
    detail = "too many sign-ins for this user"

    def __init__(self, retry_after: int) -> None:
        super().__init__(retry_after)
        self.detail = f"too many sign-ins for this user; retry in {retry_after} s"
        self.args = (self.detail,)


class TooManySignups(TooManyAttempts):
    detail = "too many sign-ups from this address"

    def __init__(self, retry_after: int) -> None:
        super().__init__(retry_after)
        self.detail = f"too many sign-ups from this address; retry in {retry_after} s"
        self.args = (self.detail,)


class HashingBusy(DomainError):
    """Every password-hashing slot stayed taken for the whole wait: come back shortly."""

    status_code = 503
    detail = "too many password checks at once; retry shortly"

    def __init__(self, retry_after: int = 1) -> None:
        super().__init__()
        self.headers = {"Retry-After": str(retry_after)}


class RefreshTokenReused(Unauthorized):
    """A spent refresh token came back: its whole family has been revoked."""

    detail = "refresh token already used; all sessions from that login are revoked"
