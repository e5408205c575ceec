"""The one error tree: every error a request can end with is an ImagegateError, with its
status code, body and headers (error_answers.py renders it: JSON for the API, OpenAI's
envelope at the OpenAI door, a page in the web gallery).

Foreign errors are mapped where they enter: a failed disk or object-store request becomes
a StorageError (store/files.py, store/objectstore.py); the openai SDK's and httpx's errors
a ProviderError of the right kind (providers/attempts.py `classify_failure`,
providers/download.py); bytes Pillow cannot read an InvalidProviderOutput (service.py
`inspect_image`) or an upload's InvalidInput (uploads.py); a database that cannot be
reached DatabaseUnavailable (store/db.py), and SQLAlchemy's errors the kind
`database_error` says.

A generation that fails is recorded, not raised: its error's `error_type` (a wire name,
in the call's `exception` and both doors' answers) says which kind of the tree ended it,
and `failure_kind` turns the name back into the kind when an answer is rendered.
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar

import sqlalchemy.exc

log = logging.getLogger("imagegate.errors")

# How long a client should wait before retrying a 409 or 503.
RETRY_AFTER_SECONDS = 2


class ImagegateError(Exception):
    status_code = 500
    headers: ClassVar[dict[str, str] | None] = None
    # A machine-readable name for errors a client acts on (the OpenAI door's `code`).
    code: str | None = None
    # What a failed generation records for this error (see `failure_kind`).
    error_type: ClassVar[str] = "internal_error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    @property
    def client_message(self) -> str:
        """What the client is told (an outage's reason is for the log only)."""
        return self.message

    def body(self) -> dict[str, Any]:
        return {"detail": self.client_message}

    def response_headers(self) -> dict[str, str] | None:
        return self.headers


class InvalidInput(ImagegateError):
    """A request field with a value the model or server cannot take (422, like pydantic's)."""

    status_code = 422

    def __init__(
        self, loc: list[str | int], message: str, value: Any = None, code: str | None = None
    ) -> None:
        super().__init__(message)
        self.loc = loc
        self.value = value
        self.code = code  # machine-readable, e.g. "model_not_found"

    def body(self) -> dict[str, Any]:
        item = {"loc": self.loc, "msg": self.message, "type": "value_error"}
        if self.value is not None:
            item["input"] = self.value
        return {"detail": [item]}


class BadRequest(ImagegateError):
    status_code = 400


class Unauthorized(ImagegateError):
    status_code = 401
    code = "invalid_api_key"


class Forbidden(ImagegateError):
    status_code = 403
    code = "permission_denied"


class NotFound(ImagegateError):
    status_code = 404


class RouteError(ImagegateError):
    """The framework's own refusal of a request (no such route: 404; a method the route
    does not take: 405), so each door answers it in its own shape."""

    def __init__(self, message: str, status_code: int, headers: dict[str, str] | None) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.route_headers = headers  # e.g. 405's Allow

    def response_headers(self) -> dict[str, str] | None:
        return self.route_headers


class Conflict(ImagegateError):
    """The same request is still being worked on elsewhere: retry later."""

    status_code = 409
    headers: ClassVar[dict[str, str] | None] = {"Retry-After": str(RETRY_AFTER_SECONDS)}


class DigestMismatch(ImagegateError):
    """The client's `expected_digest` is not the digest of what it sent (Weave's 409)."""

    status_code = 409

    def __init__(self, computed: str, expected: str) -> None:
        super().__init__(f"digest mismatch: expected {expected}, computed {computed}")


class Deleted(NotFound):
    """Something that existed and was deleted: a 404 whose body says when, which tells
    the Weave client not to retry."""

    def __init__(self, message: str, deleted_at: str) -> None:
        super().__init__(message)
        self.deleted_at = deleted_at

    def body(self) -> dict[str, Any]:
        return {"detail": self.message, "deleted_at": self.deleted_at}


class TooManyRequests(ImagegateError):
    """The caller already has as much work running as it may: retry later."""

    status_code = 429
    headers: ClassVar[dict[str, str] | None] = {"Retry-After": str(RETRY_AFTER_SECONDS)}


class Unavailable(ImagegateError):
    """A backing service cannot be used right now (the log gets the reason; the caller,
    a 503 to retry)."""

    status_code = 503
    headers: ClassVar[dict[str, str] | None] = {"Retry-After": str(RETRY_AFTER_SECONDS)}
    public_message = "service unavailable"

    @property
    def client_message(self) -> str:
        return self.public_message


class DatabaseUnavailable(Unavailable):
    public_message = "database unavailable"


class DatabaseBusy(DatabaseUnavailable):
    """Every pooled connection is in use and the queue waiting for one is full."""

    public_message = "database busy: too many requests are waiting; retry shortly"


class StorageError(Unavailable):
    """The file store failed a read or write (a disk error, an object-store request)."""

    public_message = "file storage unavailable"
    code = "storage_unavailable"
    error_type = "storage_error"


class ImagesNotStored(StorageError):
    """A generation's images could not be stored: the generation is recorded as failed
    (`storage_error`) and answered as a storage outage, to retry."""

    public_message = "the images could not be stored; the server log has details"


class InternalError(ImagegateError):
    """A bug in imagegate: the caller gets a clear answer, the details go to the log."""

    code = "internal_error"

    def __init__(self, message: str = "internal error; the server log has details") -> None:
        super().__init__(message)


# What SQLite and PostgreSQL say about a statement too large or deep to run: the
# request's fault, not the database's health.
TOO_COMPLEX = (
    "Expression tree is too large",
    "too many SQL variables",
    "too many terms in compound SELECT",
    "stack depth limit exceeded",
    "parser stack overflow",
)


def short_reason(exc: Exception) -> str:
    """The driver's own message, without the SQL statement (which can be megabytes)."""
    reason = str(getattr(exc, "orig", None) or exc)
    return reason if len(reason) <= 300 else reason[:300] + "…"


class ProviderError(ImagegateError):
    """A generation the provider could not do. Its kind is its subclass, named on the
    wire by `error_type`; `upstream_status` is the provider's HTTP status when it
    answered with one, `attempts` every HTTP attempt made."""

    status_code = 502
    code = "upstream_error"
    error_type = "provider_error"

    def __init__(
        self,
        message: str,
        *,
        upstream_status: int | None = None,
        details: dict[str, Any] | None = None,
        attempts: list[dict[str, Any]] | None = None,
    ) -> None:
        super().__init__(message)
        self.upstream_status = upstream_status
        self.details = details or {}
        self.attempts = attempts or []

    @staticmethod
    def of_type(error_type: str, message: str, **kwargs: Any) -> ProviderError:
        """The kind a recorded `error_type` names (one image's failure, re-raised)."""
        kind = _PROVIDER_KINDS.get(error_type, ProviderError)
        return kind(message, **kwargs)


class ProviderServerError(ProviderError):
    """The provider failed: a 5xx, or a connection that could not be made."""


class InvalidProviderOutput(ProviderError):
    """The provider answered, but not with images (malformed JSON, bytes that are not
    an image, an image URL that cannot be fetched)."""


class ProviderAuthError(ProviderError):
    """The server's provider key is missing, refused or unreadable: the operator's
    problem, not the caller's (so 502, never 401)."""

    code = "upstream_auth_failed"
    error_type = "auth"


class ProviderRateLimited(ProviderError):
    status_code = 429
    code = "rate_limit_exceeded"
    error_type = "rate_limit"


class ProviderTimeout(ProviderError):
    status_code = 504
    code = "upstream_timeout"
    error_type = "timeout"


class ProviderBadRequest(ProviderError):
    """The provider refused the request as invalid (a 4xx other than those below)."""

    status_code = 400
    code = "invalid_request"
    error_type = "invalid_request"


class ContentPolicyViolation(ProviderBadRequest):
    """Moderation blocked the prompt or the image (`details`: categories, stage)."""

    code = "moderation_blocked"
    error_type = "content_policy"


class ProviderModelNotFound(ProviderBadRequest):
    status_code = 404
    code = "model_not_found"
    error_type = "model_not_found"


_PROVIDER_KINDS: dict[str, type[ProviderError]] = {
    kind.error_type: kind
    for kind in (
        ProviderError,
        ProviderAuthError,
        ProviderRateLimited,
        ProviderTimeout,
        ProviderBadRequest,
        ContentPolicyViolation,
        ProviderModelNotFound,
    )
}
# Every kind of error a generation is recorded with, by its `error_type`.
_FAILURE_KINDS: dict[str, type[ImagegateError]] = {
    **_PROVIDER_KINDS,
    StorageError.error_type: StorageError,
    InternalError.error_type: InternalError,
}


def failure_kind(error_type: str) -> type[ImagegateError]:
    """The error kind a failed generation's `error_type` names, for rendering its
    status, code and headers (a name this version does not know: a provider error)."""
    return _FAILURE_KINDS.get(error_type, ProviderError)


class StorageUnavailable(StorageError):
    """Files a request brings (an edit's images) could not be stored: nothing was
    recorded or paid, and the client may retry."""


class BudgetExceeded(ImagegateError):
    """A hard budget cannot take a generation's estimated cost: refused before any
    provider call, nothing stored. 402, body `{"detail", "error_type": "budget_exceeded",
    "budget": {...}}`."""

    status_code = 402
    code = "budget_exceeded"

    def __init__(self, message: str, budget: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.budget = budget

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"detail": self.message, "error_type": self.code}
        if self.budget is not None:
            body["budget"] = self.budget
        return body


class RateLimited(ImagegateError):
    """A key or project used up its requests or images for this minute: 429 with
    Retry-After (seconds to the next window), body `{"detail", "error_type":
    "rate_limited", "limit": {...}}`."""

    status_code = 429
    code = "rate_limited"

    def __init__(self, message: str, retry_after: int, limit: dict[str, Any]) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.limit = limit

    def body(self) -> dict[str, Any]:
        return {"detail": self.message, "error_type": self.code, "limit": self.limit}

    def response_headers(self) -> dict[str, str] | None:
        return {"Retry-After": str(self.retry_after)}


def database_error(exc: BaseException) -> ImagegateError | None:
    """A SQLAlchemy error as the tree's, or None for one that is a bug in imagegate."""
    reason = short_reason(exc) if isinstance(exc, Exception) else ""
    # A lost connection, a pool that cannot hand one out, SQLite "database is locked":
    # a prompt 503 the client can retry, not a 500 or a hang.
    if isinstance(
        exc,
        sqlalchemy.exc.OperationalError
        | sqlalchemy.exc.InterfaceError
        | sqlalchemy.exc.TimeoutError,
    ):
        if any(sign in reason for sign in TOO_COMPLEX):
            log.info("query refused by the database: %s", reason)
            return BadRequest("the query is too complex for the database")
        return DatabaseUnavailable(reason)
    # PostgreSQL refuses values SQLite takes (a NUL character, an unpaired surrogate, a
    # number out of range): a data exception, SQLSTATE class 22, is the request's fault.
    sqlstate = str(getattr(getattr(exc, "orig", None), "sqlstate", "") or "")
    if isinstance(exc, sqlalchemy.exc.DBAPIError) and sqlstate.startswith("22"):
        log.info("value refused by the database: %s", reason)
        message = "a value in the request cannot be stored or searched for (e.g. a NUL character)"
        return BadRequest(message)
    return None


def as_tree_error(exc: BaseException) -> ImagegateError:
    """Any exception as an error of the tree, for answers that cannot go through the
    handlers (a body already under way): itself, a database error's mapping, else an
    InternalError (a bug, whose details are for the log)."""
    if isinstance(exc, ImagegateError):
        return exc
    return database_error(exc) or InternalError()
