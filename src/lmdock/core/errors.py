"""Every error lmdock raises on purpose; the HTTP layer maps each to its protocol's envelope from its
`status` and `kind` (and `param`, the request field at fault). The tree, with where each class lives when
not here (a unit test keeps this drawing and the classes the same):

* LmdockError                     500 api_error
  * InvalidRequest                400 invalid_request_error
    * PromptTooLong                   the prompt alone does not fit the context (Claude Code's wording)
    * TemplateError                   the chat template failed to render (chat/template.py)
  * RequestTooLarge               413 request_too_large: a body over --max-body-bytes
  * NotFound                      404 not_found_error
    * ModelNotFound                   a model, repository, file or download job
    * BatchNotFound                   a message batch (api/anthropic/batches/store.py)
    * ResponseNotFound                a stored response (api/responses/routes.py)
  * ModelLoadError                400 invalid_request_error: a file that cannot be loaded
  * Overloaded                    529 overloaded_error, with retry_after
  * ModelUnavailable              503 unloading or restarting: a retry will work
  * EngineFailed                  503 the engine stopped after internal errors
  * ModelFailed                   500 the worker crashed again while starting: load it again
  * GenerationFailed              500 after the response started: a stream `error` event (chat/session.py)
  * DownloadFailed                502 the hub could not be reached or sent something else
  * UpstreamError                 502 an upstream engine's error or garbage (upstream/errors.py)
    * BadStream                       not the SSE / JSON it should be
  * UpstreamTimeout               504 timeout_error: no answer within the upstream's timeout
  * InsufficientStorage           507 the disk is full: nothing of the request was written
  * QuotaExceeded                 429 rate_limit_error: a byte quota is used up (413 for one item over it)
"""

from __future__ import annotations


class LmdockError(Exception):
    """Base class. `status` is the HTTP status; `kind` a protocol-neutral error class."""

    status = 500
    kind = "api_error"

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


class InvalidRequest(LmdockError):
    status = 400
    kind = "invalid_request_error"


class PromptTooLong(InvalidRequest):
    """The prompt alone does not fit the context. The wording is the one Claude Code compacts on."""

    def __init__(self, n_tokens: int, n_ctx: int) -> None:
        super().__init__(f"prompt is too long: {n_tokens} tokens > {n_ctx} maximum")
        self.n_tokens = n_tokens
        self.n_ctx = n_ctx


class RequestTooLarge(LmdockError):
    status = 413
    kind = "request_too_large"


class NotFound(LmdockError):
    status = 404
    kind = "not_found_error"


class ModelNotFound(NotFound):
    pass


class ModelLoadError(LmdockError):
    """A model file that cannot be loaded (truncated, not GGUF, too large). Retrying will not help, so
    it is a 400 rather than a 5xx that SDKs would retry."""

    status = 400
    kind = "invalid_request_error"


class EngineFailed(LmdockError):
    """A loaded model's engine stopped after internal errors; the model must be reloaded."""

    status = 503
    kind = "api_error"


class DownloadFailed(LmdockError):
    """The hub could not be reached or sent something other than what it promised."""

    status = 502
    kind = "api_error"


class Overloaded(LmdockError):
    """The request queue is full; clients should retry after `retry_after` seconds."""

    status = 529
    kind = "overloaded_error"

    def __init__(self, message: str = "Overloaded", *, retry_after: int = 2) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ModelUnavailable(LmdockError):
    """The model is being unloaded or its worker is restarting; a retry a moment later will work."""

    status = 503
    kind = "api_error"


class ModelFailed(LmdockError):
    """The model's worker crashed again while loading or on its first decode; lmdock stopped restarting
    it. Loading it again (API or `lmdock load`) tries once more."""

    status = 500
    kind = "api_error"


class InsufficientStorage(LmdockError):
    """The disk is full (or the database hit its limit): nothing of this request was written, and what
    was committed before is intact. It works again by itself once space is freed."""

    status = 507
    kind = "api_error"


class QuotaExceeded(LmdockError):
    """Storing this would pass a byte quota (`too_large`: the item alone is over it, a 413; otherwise the
    quota is used up by what is stored, a 429 until some of it is deleted or expires)."""

    status = 429
    kind = "rate_limit_error"

    def __init__(self, message: str, *, too_large: bool = False, param: str | None = None) -> None:
        super().__init__(message, param=param)
        if too_large:
            self.status = 413
            self.kind = "request_too_large"
