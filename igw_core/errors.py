"""Errors the core raises, each carrying the HTTP status a frontend answers with.

Every refusal the gateway makes is one of these, turned into an OpenAI-shaped
JSON body at exactly one place (:func:`igw_core.responses.error_response`).
"""

from __future__ import annotations


class GatewayError(Exception):
    """A request the gateway refuses or cannot complete.

    Attributes:
        status: the HTTP status the client receives.
        message: human-readable text shown by OpenAI SDKs; never contains secrets.
        type: the OpenAI error ``type`` field.
        code: the OpenAI error ``code`` field.
        headers: extra response headers (e.g. ``WWW-Authenticate``).
    """

    status = 500
    type = "server_error"
    code = "internal_error"

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        type: str | None = None,
        code: str | None = None,
        headers: tuple[tuple[str, str], ...] = (),
    ) -> None:
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status
        if type is not None:
            self.type = type
        if code is not None:
            self.code = code
        self.headers = headers


class BadRequest(GatewayError):
    """The client sent something the gateway cannot act on (400)."""

    status = 400
    type = "invalid_request_error"
    code = "bad_request"


class RequestTimeout(GatewayError):
    """The client stopped sending its request body (408)."""

    status = 408
    type = "invalid_request_error"
    code = "request_timeout"


class Unauthorized(GatewayError):
    """Missing or invalid bearer token (401)."""

    status = 401
    type = "authentication_error"
    code = "invalid_token"


class Forbidden(GatewayError):
    """The request is understood but not permitted (403)."""

    status = 403
    type = "permission_error"
    code = "forbidden"


class NotFound(GatewayError):
    """No such route (404)."""

    status = 404
    type = "invalid_request_error"
    code = "not_found"


class MethodNotAllowed(GatewayError):
    """A known route asked with the wrong method (405)."""

    status = 405
    type = "invalid_request_error"
    code = "method_not_allowed"


class PayloadTooLarge(GatewayError):
    """The request body exceeds ``SERVER_MAX_REQUEST_BODY_SIZE`` (413)."""

    status = 413
    type = "invalid_request_error"
    code = "request_too_large"


class UpstreamUnreachable(GatewayError):
    """The provider could not be reached or broke the connection (502)."""

    status = 502
    type = "upstream_error"
    code = "upstream_unreachable"


class UpstreamTimeout(GatewayError):
    """The provider did not answer in time (504)."""

    status = 504
    type = "upstream_error"
    code = "upstream_timeout"


class ServiceUnavailable(GatewayError):
    """A dependency the gateway needs (e.g. the OIDC issuer) is not ready (503)."""

    status = 503
    type = "server_error"
    code = "service_unavailable"


class LocalProtocolError(Exception):
    """The caller drove a core state machine in a way its state table forbids.

    This is a bug in the frontend, never a client's fault.
    """
