"""Bearer-token (JWT) verification against a key set the caller supplies.

Pure: no IO, no clock, no environment. The IO layer fetches the issuer's JWKS
(:mod:`igw_io.oidc`) and passes the time in; pyjwt only checks signatures.
"""

from __future__ import annotations

import base64
import binascii
import enum
import json
import logging
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache
from typing import TYPE_CHECKING, Any

from igw_core.errors import ServiceUnavailable, Unauthorized

if TYPE_CHECKING:
    from jwt.algorithms import Algorithm

__all__ = [
    "ALLOWED_ALGORITHMS",
    "AuthFailure",
    "AuthReason",
    "KeySet",
    "VerificationKey",
    "log_failure",
    "not_ready_error",
    "unauthorized_error",
    "verify_bearer",
]

log = logging.getLogger("igw.auth")


class AuthReason(enum.Enum):
    """Why a bearer token was refused (logged, never sent to the client)."""

    MISSING = "missing"  # no Authorization header
    WRONG_SCHEME = "wrong_scheme"  # Authorization is not "Bearer ..."
    MALFORMED = "malformed"  # not a compact JWS, bad JSON, unusable claims
    EXPIRED = "expired"  # exp (plus leeway) has passed
    NOT_YET_VALID = "not_yet_valid"  # nbf (minus leeway) is still ahead
    BAD_SIGNATURE = "bad_signature"  # no candidate key verifies the signature
    WRONG_ISSUER = "wrong_issuer"  # iss differs from AUTH_OIDC_ISSUER
    UNKNOWN_KID = "unknown_kid"  # no key with the token's kid (a refetch may help)
    WRONG_AUDIENCE = "wrong_audience"  # neither aud nor azp names the client id
    BAD_ALGORITHM = "bad_algorithm"  # alg not allowed, or does not fit the key
    NO_KEYS = "no_keys"  # the issuer's keys are not loaded (answer 503, not 401)


class AuthFailure(Exception):
    """A bearer token was refused.

    Attributes:
        reason: the :class:`AuthReason`.
        detail: development-log text saying exactly what did not match; it
            never contains the token, and attacker-supplied values in it are
            quoted with ``repr`` and truncated.
        kid: for ``UNKNOWN_KID``, the token's key id (``""`` if it had none),
            to ask the IO layer for a refetch; otherwise ``None``.
    """

    def __init__(self, reason: AuthReason, detail: str, *, kid: str | None = None) -> None:
        super().__init__(f"{reason.value}: {detail}")
        self.reason = reason
        self.detail = detail
        self.kid = kid


#: alg -> (JWK kty it needs, JWK curves it accepts or None for any).
ALLOWED_ALGORITHMS: Mapping[str, tuple[str, frozenset[str] | None]] = {
    "RS256": ("RSA", None),
    "RS384": ("RSA", None),
    "RS512": ("RSA", None),
    "PS256": ("RSA", None),
    "PS384": ("RSA", None),
    "PS512": ("RSA", None),
    "ES256": ("EC", frozenset({"P-256"})),
    "ES384": ("EC", frozenset({"P-384"})),
    "EdDSA": ("OKP", frozenset({"Ed25519", "Ed448"})),
}

#: Each key type and an algorithm whose pyjwt class parses its JWKs.
_KEY_ALGORITHM = {"RSA": "RS256", "EC": "ES256", "OKP": "EdDSA"}


@cache
def _verifiers() -> dict[str, Algorithm]:
    """pyjwt's verifiers of the allowed algorithms (imported on first use: with auth off,
    pyjwt and cryptography are never loaded)."""
    from jwt.algorithms import get_default_algorithms

    return {name: algorithm for name, algorithm in get_default_algorithms().items()
            if name in ALLOWED_ALGORITHMS}


def _key_parser(kty: str) -> type[Algorithm]:
    return type(_verifiers()[_KEY_ALGORITHM[kty]])


#: Longest Authorization value looked at; real access tokens are a few KiB.
MAX_TOKEN_BYTES = 16 * 1024
_COMPACT_JWS = re.compile(rb"([A-Za-z0-9_-]+)\.([A-Za-z0-9_-]+)\.([A-Za-z0-9_-]*)")
_SHOWN_SCHEME = re.compile(rb"[A-Za-z][A-Za-z0-9_-]{0,19}")
_MAX_SHOWN = 120


def _show(value: object) -> str:
    """Quote a (possibly attacker-supplied) value for a log line, bounded in length."""
    text = repr(value)
    return text if len(text) <= _MAX_SHOWN else text[: _MAX_SHOWN - 3] + "..."


def _iso(timestamp: float) -> str:
    try:
        return datetime.fromtimestamp(timestamp, tz=UTC).isoformat(timespec="seconds")
    except (OverflowError, ValueError, OSError):
        return _show(timestamp)


# -- keys ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class VerificationKey:
    """One public key from a JWKS that can verify signatures.

    Fields:
        kid: the JWK ``kid``, or ``None`` if the JWK has none.
        kty: ``"RSA"``, ``"EC"`` or ``"OKP"``.
        crv: the curve for EC/OKP keys, else ``None``.
        alg: the JWK's ``alg`` if it names one; the key then verifies only that.
        key: the ``cryptography`` public key object.
    """

    kid: str | None
    kty: str
    crv: str | None
    alg: str | None
    key: Any = field(compare=False, repr=False)

    def fits(self, alg: str) -> bool:
        """Return whether this key may verify a token signed with ``alg``."""
        need = ALLOWED_ALGORITHMS.get(alg)
        if need is None or (self.alg is not None and self.alg != alg):
            return False
        kty, curves = need
        return self.kty == kty and (curves is None or self.crv in curves)

    def describe(self) -> str:
        """Return e.g. ``'k1' (EC P-256, alg ES256)`` for log lines."""
        shape = " ".join(p for p in (self.kty, self.crv) if p)
        alg = f", alg {self.alg}" if self.alg else ""
        return f"{_show(self.kid)} ({shape}{alg})"


def _parse_jwk(jwk: object) -> VerificationKey | str:
    """Return the key, or a short reason it was skipped."""
    if not isinstance(jwk, Mapping):
        return "entry is not an object"
    kid, kty, crv, alg = (jwk.get(n) for n in ("kid", "kty", "crv", "alg"))
    name = _show(kid) if kid is not None else "(no kid)"
    if kid is not None and not isinstance(kid, str):
        return f"key {name}: kid is not a string"
    use, ops = jwk.get("use"), jwk.get("key_ops")
    if use is not None and use != "sig":
        return f"key {name}: use {_show(use)} is not 'sig'"
    if ops is not None and (not isinstance(ops, list) or "verify" not in ops):
        return f"key {name}: key_ops {_show(ops)} lacks 'verify'"
    if not isinstance(kty, str) or kty not in _KEY_ALGORITHM:
        return f"key {name}: unsupported kty {_show(kty)}"
    if crv is not None and not isinstance(crv, str):
        return f"key {name}: crv is not a string"
    if alg is not None and (not isinstance(alg, str) or alg not in ALLOWED_ALGORITHMS):
        return f"key {name}: alg {_show(alg)} is not allowed"
    candidate = VerificationKey(kid, kty, crv, alg, None)
    if not any(candidate.fits(a) for a in ALLOWED_ALGORITHMS):
        return f"key {name}: no allowed algorithm fits {kty} {crv or ''}".rstrip()
    from jwt.exceptions import PyJWTError

    try:
        key = _key_parser(kty).from_jwk(dict(jwk))
    except (PyJWTError, ValueError, TypeError, KeyError, binascii.Error) as exc:
        return f"key {name}: unreadable ({type(exc).__name__})"
    public = getattr(key, "public_key", None)
    if callable(public):  # a JWKS should never carry private parts; never keep them
        key = public()
    return VerificationKey(kid, kty, crv, alg, key)


@dataclass(frozen=True, slots=True)
class KeySet:
    """The issuer's signature keys, looked up by ``kid``.

    Build it with :meth:`from_jwks`. ``skipped`` lists, for the log, the JWKS
    entries that were left out and why.
    """

    keys: tuple[VerificationKey, ...] = ()
    skipped: tuple[str, ...] = ()

    @classmethod
    def from_jwks(cls, doc: Mapping[str, Any]) -> KeySet:
        """Return the usable signature keys of a JWKS document.

        Entries for encryption (``use: enc``), of unsupported types or curves,
        with a disallowed ``alg``, or unreadable are skipped, never fatal; a
        document without a ``keys`` list gives an empty set. Never raises.
        """
        entries = doc.get("keys") if isinstance(doc, Mapping) else None
        if not isinstance(entries, list):
            return cls((), ("document has no 'keys' list",))
        keys: list[VerificationKey] = []
        skipped: list[str] = []
        for entry in entries:
            parsed = _parse_jwk(entry)
            if isinstance(parsed, str):
                skipped.append(parsed)
            else:
                keys.append(parsed)
        return cls(tuple(keys), tuple(skipped))

    def __len__(self) -> int:
        return len(self.keys)

    @property
    def kids(self) -> tuple[str, ...]:
        """Return the key ids present, in JWKS order."""
        return tuple(k.kid for k in self.keys if k.kid is not None)

    def has(self, kid: str) -> bool:
        """Return whether a key with this ``kid`` is present."""
        return any(k.kid == kid for k in self.keys)

    def lookup(self, kid: str) -> tuple[VerificationKey, ...]:
        """Return every key whose ``kid`` equals ``kid`` (usually one)."""
        return tuple(k for k in self.keys if k.kid == kid)

    def fitting(self, alg: str) -> tuple[VerificationKey, ...]:
        """Return every key that may verify ``alg``."""
        return tuple(k for k in self.keys if k.fits(alg))


# -- tokens ----------------------------------------------------------------


def _b64decode(segment: bytes, what: str) -> bytes:
    """Decode one base64url segment, refusing non-canonical spellings.

    Non-canonical ones (unused low bits set) would let one signature be
    written several ways; refusing them keeps a mangled token from verifying.
    """
    try:
        decoded = base64.urlsafe_b64decode(segment + b"=" * (-len(segment) % 4))
    except (binascii.Error, ValueError):
        raise AuthFailure(AuthReason.MALFORMED, f"{what} is not base64url") from None
    if base64.urlsafe_b64encode(decoded).rstrip(b"=") != segment:
        raise AuthFailure(AuthReason.MALFORMED, f"{what} is not canonical base64url")
    return decoded


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _json_object(data: bytes, what: str) -> dict[str, Any]:
    try:
        value = json.loads(data, parse_constant=_reject_constant)
    except (ValueError, RecursionError):
        raise AuthFailure(AuthReason.MALFORMED, f"{what} is not JSON") from None
    if not isinstance(value, dict):
        raise AuthFailure(AuthReason.MALFORMED, f"{what} is not a JSON object")
    return value


def _bearer_token(authorization: bytes | None) -> bytes:
    if authorization is None or not authorization.strip(b" \t"):
        raise AuthFailure(AuthReason.MISSING, "no Authorization header")
    scheme, _, rest = authorization.strip(b" \t").partition(b" ")
    if scheme.lower() != b"bearer":
        # Show the scheme only when it looks like one, so a bare token pasted
        # without "Bearer " never reaches the log.
        shown = (
            _show(scheme.decode("ascii"))
            if _SHOWN_SCHEME.fullmatch(scheme)
            else "(not a scheme name)"
        )
        raise AuthFailure(AuthReason.WRONG_SCHEME, f"authorization scheme {shown} is not Bearer")
    token = rest.strip(b" \t")
    if not token:
        raise AuthFailure(AuthReason.MALFORMED, "empty bearer token")
    if len(token) > MAX_TOKEN_BYTES:
        raise AuthFailure(AuthReason.MALFORMED, f"token longer than {MAX_TOKEN_BYTES} bytes")
    return token


@dataclass(frozen=True, slots=True)
class _Parsed:
    header: dict[str, Any]
    claims: dict[str, Any]
    signing_input: bytes
    signature: bytes


def _parse(token: bytes) -> _Parsed:
    match = _COMPACT_JWS.fullmatch(token)
    if match is None:
        raise AuthFailure(AuthReason.MALFORMED, "token is not a JWT (three base64url segments)")
    head_b64, body_b64, sig_b64 = match.groups()
    header = _json_object(_b64decode(head_b64, "header"), "header")
    claims = _json_object(_b64decode(body_b64, "payload"), "payload")
    signature = _b64decode(sig_b64, "signature")
    return _Parsed(header, claims, head_b64 + b"." + body_b64, signature)


def _check_header(header: Mapping[str, Any]) -> tuple[str, str | None]:
    alg = header.get("alg")
    if not isinstance(alg, str) or alg not in ALLOWED_ALGORITHMS:
        allowed = ", ".join(ALLOWED_ALGORITHMS)
        raise AuthFailure(
            AuthReason.BAD_ALGORITHM, f"algorithm {_show(alg)} is not allowed ({allowed})"
        )
    kid = header.get("kid")
    if kid is not None and not isinstance(kid, str):
        raise AuthFailure(AuthReason.MALFORMED, f"kid {_show(kid)} is not a string")
    if "crit" in header:  # RFC 7515 §4.1.11: unknown critical extensions must be refused
        raise AuthFailure(AuthReason.MALFORMED, f"unsupported crit header {_show(header['crit'])}")
    return alg, kid


def _issuer_hint(expected: str, got: str) -> str:
    if got.rstrip("/") == expected.rstrip("/"):
        return " (trailing slash differs)"
    for a, b in (("http://", "https://"), ("https://", "http://")):
        if expected.startswith(a) and got.startswith(b) and expected[len(a) :] == got[len(b) :]:
            return " (http vs https)"
    return ""


def _check_issuer(claims: Mapping[str, Any], issuer: str) -> None:
    iss = claims.get("iss")
    if iss == issuer and isinstance(iss, str):
        return
    if "iss" not in claims:
        raise AuthFailure(
            AuthReason.WRONG_ISSUER, f"issuer mismatch: expected {_show(issuer)} got no iss claim"
        )
    hint = _issuer_hint(issuer, iss) if isinstance(iss, str) else ""
    raise AuthFailure(
        AuthReason.WRONG_ISSUER, f"issuer mismatch: expected {_show(issuer)} got {_show(iss)}{hint}"
    )


def _candidates(keys: KeySet, kid: str | None, alg: str) -> tuple[VerificationKey, ...]:
    known = ", ".join(_show(k) for k in keys.kids) or "none"
    if kid is None:
        fitting = keys.fitting(alg)
        if not fitting:
            raise AuthFailure(
                AuthReason.UNKNOWN_KID,
                f"token has no kid and no key fits {alg} (known key ids: {known})",
                kid="",
            )
        return fitting
    named = keys.lookup(kid)
    if not named:
        raise AuthFailure(
            AuthReason.UNKNOWN_KID, f"unknown key id {_show(kid)} (known: {known})", kid=kid
        )
    fitting = tuple(k for k in named if k.fits(alg))
    if not fitting:
        shown = "; ".join(k.describe() for k in named)
        raise AuthFailure(AuthReason.BAD_ALGORITHM, f"algorithm {alg} does not fit key {shown}")
    return fitting


def _signature_ok(key: VerificationKey, alg: str, parsed: _Parsed) -> bool:
    from jwt.exceptions import PyJWTError

    try:
        return _verifiers()[alg].verify(parsed.signing_input, key.key, parsed.signature)
    except (PyJWTError, ValueError, TypeError):
        return False


def _number(claims: Mapping[str, Any], name: str) -> float | int:
    value = claims.get(name)
    if value is None:
        raise AuthFailure(AuthReason.MALFORMED, f"token has no {name} claim")
    # bool is an int; NaN and the infinities never compare sensibly.
    finite = isinstance(value, int) or (isinstance(value, float) and math.isfinite(value))
    if isinstance(value, bool) or not finite:
        raise AuthFailure(AuthReason.MALFORMED, f"{name} claim {_show(value)} is not a number")
    return value  # type: ignore[no-any-return]


def _check_times(claims: Mapping[str, Any], now: float, leeway: float) -> None:
    exp = _number(claims, "exp")
    # Compare as "now - leeway >= exp" so a huge integer claim cannot overflow a float.
    if now - leeway >= exp:
        raise AuthFailure(
            AuthReason.EXPIRED,
            f"token expired at {_iso(exp)} (now {_iso(now)}, leeway {leeway:g}s)",
        )
    if "nbf" in claims:
        nbf = _number(claims, "nbf")
        if now + leeway < nbf:
            raise AuthFailure(
                AuthReason.NOT_YET_VALID,
                f"token not valid before {_iso(nbf)} (now {_iso(now)}, leeway {leeway:g}s)",
            )


def _check_audience(claims: Mapping[str, Any], audience: str) -> None:
    aud = claims.get("aud")
    listed: Iterable[object] = (
        [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else ()
    )
    if any(a == audience and isinstance(a, str) for a in listed):
        return
    azp = claims.get("azp")
    if azp == audience and isinstance(azp, str):
        return
    raise AuthFailure(
        AuthReason.WRONG_AUDIENCE,
        f"audience mismatch: expected {_show(audience)} in aud or as azp, "
        f"got aud {_show(aud)} azp {_show(azp)}",
    )


def verify_bearer(
    authorization: bytes | None,
    keys: KeySet | None,
    *,
    issuer: str,
    audience: str,
    now: float,
    leeway: float = 30.0,
) -> dict[str, Any]:
    """Verify an ``Authorization: Bearer <JWT>`` header value and return the token's claims.

    Checks, in order: the scheme; the token's shape; ``alg`` is one of
    :data:`ALLOWED_ALGORITHMS` (never ``none`` or ``HS*``); ``iss`` equals
    ``issuer`` byte for byte (checked before any key is looked up, so a
    foreign issuer's token never causes a JWKS refetch); a key with the
    token's ``kid`` (or, without a ``kid``, any fitting key) whose type, curve
    and JWK ``alg`` fit the token's ``alg`` verifies the signature; ``exp``
    (required) and ``nbf`` against ``now`` with ``leeway`` seconds; ``aud``
    (string or list) contains ``audience`` or ``azp`` equals it.

    Args:
        authorization: the raw header value, or ``None`` when absent.
        keys: the issuer's keys, or ``None`` while they are not loaded.
        issuer: the configured ``AUTH_OIDC_ISSUER``.
        audience: the configured ``AUTH_OIDC_CLIENT_ID``.
        now: wall-clock time, seconds since the epoch.
        leeway: clock skew tolerated for ``exp`` and ``nbf``, in seconds.

    Returns:
        The verified claims.

    Raises:
        AuthFailure: for every refusal, and for nothing else. ``NO_KEYS``
            (``keys`` is ``None``) is raised only for a well-formed token from
            the configured issuer; ``UNKNOWN_KID`` carries the ``kid`` to refetch.
    """
    parsed = _parse(_bearer_token(authorization))
    alg, kid = _check_header(parsed.header)
    _check_issuer(parsed.claims, issuer)
    if keys is None:
        raise AuthFailure(AuthReason.NO_KEYS, "identity provider keys are not loaded yet")
    candidates = _candidates(keys, kid, alg)
    if not any(_signature_ok(key, alg, parsed) for key in candidates):
        tried = "; ".join(k.describe() for k in candidates)
        raise AuthFailure(AuthReason.BAD_SIGNATURE, f"signature does not verify with key {tried}")
    _check_times(parsed.claims, now, leeway)
    _check_audience(parsed.claims, audience)
    return parsed.claims


# -- answers and log lines ---------------------------------------------------

#: The only text a refused client sees; the reason goes to the log.
UNAUTHORIZED_MESSAGE = "invalid or missing bearer token"
NOT_READY_MESSAGE = "auth not ready: identity provider keys not loaded yet"


def unauthorized_error(reason: AuthReason | None = None) -> Unauthorized:
    """Return the 401 to answer a refused token with.

    The body never says why. ``WWW-Authenticate`` is always ``Bearer
    error="invalid_token"``, a missing token included: the contract names one
    challenge for every refusal, so clients need to handle only one shape.
    """
    challenge = 'Bearer error="invalid_token"'
    return Unauthorized(UNAUTHORIZED_MESSAGE, headers=(("WWW-Authenticate", challenge),))


def not_ready_error() -> ServiceUnavailable:
    """Return the 503 to answer with while the issuer's keys are not loaded."""
    return ServiceUnavailable(NOT_READY_MESSAGE, headers=(("Retry-After", "5"),))


def log_failure(failure: AuthFailure, *, development: bool, request_id: str) -> None:
    """Log one line for a refused request on the ``igw.auth`` logger.

    The message is ``unauthorized`` (``auth not ready`` for ``NO_KEYS``, which
    is answered 503). Development logs the reason and the detail; production
    the reason class only. Never logs the token.
    """
    extra: dict[str, Any] = {"request_id": request_id, "reason": failure.reason.value}
    if development:
        extra["detail"] = failure.detail
    message = "auth not ready" if failure.reason is AuthReason.NO_KEYS else "unauthorized"
    log.warning(message, extra=extra)
