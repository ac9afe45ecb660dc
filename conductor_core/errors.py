"""The exception tree. Providers map their SDK's exceptions to these in one function each;
nothing else (no SDK exception, no API key) reaches a user.

    ProviderError
    ├── AuthenticationError      401/403: the key is missing or wrong
    ├── RateLimitError           429: retryable, honours retry_after
    ├── ProviderTimeoutError     no answer in time: retryable
    ├── ProviderUnavailableError 5xx, connection refused, overloaded: retryable
    ├── BadRequestError          400/404/422: the request itself must change
    ├── StreamInterruptedError   the stream broke part-way: keeps the partial text
    ├── NotConfiguredError       the provider has no key / endpoint configured
    ├── NoProviderAvailableError AUTO found nothing it may use
    ├── CircuitOpenError         Conductor paused the provider after failures (retry_after: when it probes)
    ├── ProviderBusyError        the provider's concurrency limit and queue are full (retry_after: 1 s)
    ├── UnsendableRequestError   (a BadRequestError) the request holds what no provider can be sent
    └── InternalError            a bug in Conductor while preparing the call (500; logged with an id)

`retryable` says whether trying again may help (the gateway's `x-should-retry`); the router
retries in-process only errors that are also `retry_in_process` (not a paused or full
provider: waiting for those is the caller's choice, told by `retry_after`), and AUTO falls back
to another provider only after errors that are `falls_back` (not after one every provider
would meet the same way).

Where an exception came from decides whose fault it is (`classify`): only what the upstream
did (an SDK's status, connection or timeout error, a transport error, a body that is not what
the protocol says: `MalformedResponse`, a JSON decode error, a pydantic ValidationError of
upstream data) counts against a provider and its breaker. Text that cannot be encoded is the
request's fault (400); anything else raised while Conductor builds the call is Conductor's own
(500), never the provider's.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Sequence
from typing import Any

from pydantic import ValidationError

from .config import redact
from .models import Attempt, ErrorResponse, new_id

__all__ = [
    "ProviderError",
    "AuthenticationError",
    "RateLimitError",
    "ProviderTimeoutError",
    "ProviderUnavailableError",
    "BadRequestError",
    "StreamInterruptedError",
    "NotConfiguredError",
    "NoProviderAvailableError",
    "CircuitOpenError",
    "ProviderBusyError",
    "UnsendableRequestError",
    "InternalError",
    "MalformedResponse",
    "classify",
    "error_for_status",
    "parse_retry_after",
    "transport_error",
    "sdk_error",
    "NOT_PROVIDER_FAULTS",
    "provider_at_fault",
]

#: Failures the request caused (its messages or settings must change: a context overflow, a
#: bad parameter), a person chose (stopping an answer), Conductor's own limits refused (a
#: paused or full provider: no call was made), or a bug in Conductor caused. They stay in the
#: request log, but do not count against the provider's success rate, circuit breaker or AUTO
#: score.
NOT_PROVIDER_FAULTS: frozenset[str] = frozenset({"bad_request", "cancelled", "busy", "circuit_open", "internal_error"})

log = logging.getLogger("conductor")


def provider_at_fault(error_type: str | None) -> bool:
    """Whether a failure of this type says something about the provider's health."""
    return error_type is not None and error_type not in NOT_PROVIDER_FAULTS


class ProviderError(Exception):
    type = "provider_error"
    default_retryable = False
    retry_in_process = True  # the router may retry it itself (when also retryable)
    falls_back = True  # AUTO may try the next provider after it
    #: On the error the router raises once every candidate failed: what was tried, for which request.
    attempts: Sequence[Attempt] = ()
    request_id: str | None = None

    def __init__(
        self,
        message: str,
        *,
        provider: str | None = None,
        status_code: int | None = None,
        retryable: bool | None = None,
        retry_after: float | None = None,
        code: str | None = None,
        param: str | None = None,
    ) -> None:
        # Redact here, once, so whatever an SDK put in its message cannot carry a key further.
        self.message = redact(message)
        super().__init__(self.message)
        self.provider = provider
        self.status_code = status_code
        self.retryable = self.default_retryable if retryable is None else retryable
        self.retry_after = retry_after
        #: The upstream's own machine-readable code (OpenAI's error.code, e.g. context_length_exceeded;
        #: Anthropic's error type; Gemini's status), when it gave one.
        self.code = code
        #: The request field at fault (the upstream's error.param, or Conductor's own check).
        self.param = param

    def to_response(self, request_id: str | None = None) -> ErrorResponse:
        return ErrorResponse(
            type=self.type,
            message=self.message,
            provider=self.provider,
            status_code=self.status_code,
            retryable=self.retryable,
            retry_after=self.retry_after,
            request_id=request_id,
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}(provider={self.provider!r}, status_code={self.status_code}, message={self.message!r})"


class AuthenticationError(ProviderError):
    type = "authentication"


class RateLimitError(ProviderError):
    type = "rate_limit"
    default_retryable = True


class ProviderTimeoutError(ProviderError):
    type = "timeout"
    default_retryable = True


class ProviderUnavailableError(ProviderError):
    type = "unavailable"
    default_retryable = True


class BadRequestError(ProviderError):
    type = "bad_request"


class StreamInterruptedError(ProviderError):
    type = "stream_interrupted"
    default_retryable = True  # only before any text was shown; the router checks `partial_text`

    def __init__(self, message: str, *, partial_text: str = "", **kwargs) -> None:
        super().__init__(message, **kwargs)
        self.partial_text = partial_text


class NotConfiguredError(ProviderError):
    type = "not_configured"


class NoProviderAvailableError(ProviderError):
    type = "no_provider_available"
    default_retryable = True


class CircuitOpenError(ProviderUnavailableError):
    """No call was made: the provider's breaker is open after repeated failures."""

    type = "circuit_open"
    retry_in_process = False


class ProviderBusyError(ProviderUnavailableError):
    """No call was made: as many calls as the provider's limit allows are running, and as many
    are already waiting for a slot (see `bulkhead_limit` and `bulkhead_queue`)."""

    type = "busy"
    retry_in_process = False


class UnsendableRequestError(BadRequestError):
    """No call was made, or none could be sent: the request holds what no provider can take
    (text that cannot be encoded). Trying another provider would fail the same way."""

    falls_back = False


class InternalError(ProviderError):
    """A bug in Conductor while it prepared the call (not the provider's fault, not the
    request's): logged with the traceback under `incident`, the id the message asks to quote."""

    type = "internal_error"
    falls_back = False  # every provider goes through the same code

    def __init__(self, message: str, *, incident: str, **kwargs) -> None:
        super().__init__(message, **kwargs)
        self.incident = incident


class MalformedResponse(ValueError):
    """The upstream answered with a body that is not what its protocol says (raised by the
    providers' converters; counted against the provider, as a broken answer is)."""


def error_for_status(
    provider: str,
    status: int | None,
    detail: str,
    *,
    retry_after: float | None = None,
    key_hint: str | None = None,
    code: str | None = None,
    param: str | None = None,
) -> ProviderError:
    """One mapping from an HTTP status to our tree, shared by every cloud provider."""
    kwargs: dict[str, Any] = {
        "provider": provider,
        "status_code": status,
        "retry_after": retry_after,
        "code": code,
        "param": param,
    }
    if status in (401, 403):
        hint = f": check {key_hint}" if key_hint else ""
        return AuthenticationError(f"{provider} rejected the API key{hint} ({detail})", **kwargs)
    if status == 429:
        wait = f"; retry after {retry_after:g} s" if retry_after else ""
        return RateLimitError(f"{provider} is rate limiting requests{wait} ({detail})", **kwargs)
    if status in (408, 504):
        return ProviderTimeoutError(f"{provider} timed out ({detail})", **kwargs)
    if status is not None and status >= 500 or status == 529:
        return ProviderUnavailableError(f"{provider} is unavailable (HTTP {status}: {detail})", **kwargs)
    if status is not None and 400 <= status < 500:
        return BadRequestError(f"{provider} rejected the request (HTTP {status}: {detail})", **kwargs)
    return ProviderError(f"{provider} failed: {detail}", **kwargs)


def parse_retry_after(headers) -> float | None:
    """Seconds from `retry-after-ms` or `retry-after` (seconds or an HTTP date), if present."""
    if not headers:
        return None
    try:
        if headers.get("retry-after-ms"):
            return max(0.0, float(headers["retry-after-ms"]) / 1000)
        value = headers.get("retry-after")
        if not value:
            return None
        try:
            return max(0.0, float(value))
        except ValueError:
            from email.utils import parsedate_to_datetime

            from .models import utcnow

            return max(0.0, (parsedate_to_datetime(value) - utcnow()).total_seconds())
    except (TypeError, ValueError):
        return None


def _transport_modules() -> list:
    # google-genai sits on httpx2 (a fork under another namespace), openai and anthropic on httpx.
    import importlib

    modules = []
    for name in ("httpx", "httpx2"):
        try:
            modules.append(importlib.import_module(name))
        except ImportError:
            pass
    return modules


def transport_error(provider: str, exc: Exception) -> ProviderError | None:
    """httpx/httpx2/aiohttp-level failures and malformed bodies (the upstream's doing), or None
    if `exc` is none of them. (google-genai's async client runs on aiohttp when it is installed, as it is here:
    the openai SDK's aiohttp transport needs it.)"""
    for httpx in _transport_modules():
        if isinstance(exc, httpx.TimeoutException):
            return ProviderTimeoutError(f"{provider} did not answer in time", provider=provider)
        if isinstance(exc, httpx.TransportError):
            return ProviderUnavailableError(
                f"{provider} connection failed ({type(exc).__name__}: {exc})", provider=provider
            )
    if isinstance(exc, TimeoutError):  # aiohttp's timeouts (asyncio.TimeoutError is TimeoutError)
        return ProviderTimeoutError(f"{provider} did not answer in time", provider=provider)
    aiohttp = sys.modules.get("aiohttp")  # only loaded when an SDK chose it
    if aiohttp is not None and isinstance(exc, aiohttp.ClientError):
        return ProviderUnavailableError(
            f"{provider} connection failed ({type(exc).__name__}: {exc})", provider=provider
        )
    if isinstance(exc, _MALFORMED):
        return ProviderUnavailableError(f"{provider} sent a malformed response ({exc})", provider=provider)
    return None


#: A body that is not what the protocol says. orjson's decode error is a json.JSONDecodeError;
#: a pydantic ValidationError reaches here only from an SDK parsing the upstream's answer (the
#: converters wrap their own reading in MalformedResponse); UnicodeDecodeError: bytes that are not text.
_MALFORMED = (MalformedResponse, json.JSONDecodeError, ValidationError, UnicodeDecodeError)


def classify(provider: str, exc: BaseException) -> ProviderError:
    """An exception that is neither an SDK's nor a transport's nor a malformed answer (those
    are the upstream's, and `transport_error`/`sdk_error` map them): the request's fault when
    its text cannot be encoded (400, no other provider would take it), else a bug in Conductor
    (500, logged with its traceback under an id the message gives). Neither counts against
    the provider."""
    if isinstance(exc, UnicodeEncodeError):
        bad = repr(exc.object[exc.start : exc.end]) if isinstance(exc.object, str) else "a character"
        return UnsendableRequestError(
            f"the request holds text that cannot be encoded as {exc.encoding.upper()} ({bad}, a lone surrogate?): "
            "send valid Unicode text",
            provider=provider,
            status_code=400,
        )
    incident = new_id("err")
    log.error(
        "internal error %s while calling %s: %s: %s", incident, provider, type(exc).__name__, redact(exc), exc_info=exc
    )
    return InternalError(
        f"Conductor failed while preparing the call to {provider} ({type(exc).__name__}); this is a bug in Conductor, "
        f"not the provider's fault: quote {incident} when reporting it",
        provider=provider,
        incident=incident,
    )


def sdk_error(provider: str, exc: Exception, sdk, *, key_hint: str | None, timeout_s: float) -> ProviderError:
    """The `openai` and `anthropic` SDKs share one exception tree (both are generated by
    Stainless): map it once for both. `sdk` is the SDK module."""
    if isinstance(exc, sdk.APITimeoutError):
        return ProviderTimeoutError(f"{provider} did not answer in {timeout_s:g} s", provider=provider)
    if isinstance(exc, sdk.APIStatusError):
        body = exc.body if isinstance(exc.body, dict) else {}
        inner = body.get("error", body)
        inner = inner if isinstance(inner, dict) else {}
        # OpenAI's machine-readable `code`; Anthropic ({"type": "error", "error": {...}}) has only its type.
        code = inner.get("code") if body.get("type") != "error" else inner.get("type")
        return error_for_status(
            provider,
            exc.status_code,
            str(inner.get("message") or exc.message),
            retry_after=parse_retry_after(exc.response.headers),
            key_hint=key_hint,
            code=code if isinstance(code, str) else None,
            param=inner.get("param") if isinstance(inner.get("param"), str) else None,
        )
    if isinstance(exc, sdk.APIConnectionError):
        return ProviderUnavailableError(f"{provider} could not be reached ({exc.__cause__ or exc})", provider=provider)
    if isinstance(exc, sdk.APIResponseValidationError):
        return ProviderUnavailableError(f"{provider} sent a malformed response", provider=provider)
    return transport_error(provider, exc) or classify(provider, exc)
