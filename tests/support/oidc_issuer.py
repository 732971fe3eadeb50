"""A real, small OIDC issuer on 127.0.0.1: discovery and JWKS over HTTP, tokens minted with pyjwt.

It runs a stdlib threading HTTP server in a background daemon thread, so sync and async tests can
both use it. Keys are real ``cryptography`` keys (RSA, EC P-256/P-384, Ed25519/Ed448).

Quick reference::

    with OIDCIssuer() as idp:                      # one RSA key to start with
        token = idp.mint()                         # iss, aud=client_id, sub, iat, exp=now+300
        token = idp.mint({"exp": 1}, alg="PS256")  # claims override the defaults
        new = idp.rotate("EC")                     # publish a new key, retire the old ones
        idp.down("refuse")  /  idp.down("503")  /  idp.up()
        idp.advertised_issuer = idp.issuer + "/"   # discovery names another issuer
        idp.jwks_requests                          # how many JWKS GETs were served

:class:`SigningKey` and :func:`mint_token` work without a server, for pure core tests.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
import json
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Literal

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm, get_default_algorithms

__all__ = ["DEFAULT", "OIDCIssuer", "SigningKey", "mint_token"]

_kids = itertools.count(1)
_DEFAULT_ALG = {"RSA": "RS256", "P-256": "ES256", "P-384": "ES384", "Ed25519": "EdDSA",
                "Ed448": "EdDSA"}


class _Default:
    def __repr__(self) -> str:
        return "DEFAULT"


#: "Use the default" marker for :func:`mint_token`'s ``kid`` (``None`` means "no kid").
DEFAULT: Any = _Default()


@dataclass
class SigningKey:
    """One private key the issuer signs with, and how its public half is published.

    Fields:
        kid: the key id (in the JWK and in tokens' headers).
        kty: ``"RSA"``, ``"EC"`` or ``"OKP"``.
        crv: the curve for EC/OKP keys.
        alg: the algorithm tokens are signed with by default.
        private: the ``cryptography`` private key.
        jwk_alg: whether the published JWK names ``alg``.
        use: the JWK ``use`` (``None`` leaves it out).
    """

    kid: str
    kty: str
    crv: str | None
    alg: str
    private: Any = field(repr=False)
    jwk_alg: bool = True
    use: str | None = "sig"

    @classmethod
    def generate(
        cls,
        kty: str = "RSA",
        *,
        kid: str | None = None,
        alg: str | None = None,
        crv: str | None = None,
        jwk_alg: bool = True,
        use: str | None = "sig",
    ) -> SigningKey:
        """Return a fresh key: ``RSA`` (2048 bits), ``EC`` (``crv`` P-256 or P-384) or ``OKP``."""
        private: Any
        if kty == "RSA":
            crv = None
            private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        elif kty == "EC":
            crv = crv or "P-256"
            curve = {"P-256": ec.SECP256R1(), "P-384": ec.SECP384R1()}[crv]
            private = ec.generate_private_key(curve)
        elif kty == "OKP":
            crv = crv or "Ed25519"
            private = (ed25519.Ed25519PrivateKey if crv == "Ed25519"
                       else ed448.Ed448PrivateKey).generate()
        else:
            raise ValueError(f"unsupported kty {kty!r}")
        return cls(
            kid=kid or f"key-{next(_kids)}",
            kty=kty,
            crv=crv,
            alg=alg or _DEFAULT_ALG[crv or "RSA"],
            private=private,
            jwk_alg=jwk_alg,
            use=use,
        )

    def public_jwk(self) -> dict[str, Any]:
        """Return the public JWK as the JWKS publishes it."""
        public = self.private.public_key()
        parser = {"RSA": RSAAlgorithm, "EC": ECAlgorithm, "OKP": OKPAlgorithm}[self.kty]
        out: dict[str, Any] = dict(parser.to_jwk(public, as_dict=True))
        out["kid"] = self.kid
        if self.use is not None:
            out["use"] = self.use
        if self.jwk_alg:
            out["alg"] = self.alg
        else:
            out.pop("alg", None)
        return out

    def public_pem(self) -> bytes:
        """Return the public key as PEM (what an HS256 key-confusion attack uses as secret)."""
        pem: bytes = self.private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return pem


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _sign(claims: Mapping[str, Any], header: dict[str, Any], alg: str, key: Any) -> str:
    """Sign by hand (pyjwt's encoder refuses odd claims, ``none`` and PEM secrets for HS*)."""
    header = {"alg": alg, "typ": "JWT", **header}
    signing_input = (
        _b64(json.dumps(header, separators=(",", ":")).encode())
        + "."
        + _b64(json.dumps(dict(claims), separators=(",", ":")).encode())
    )
    if alg == "none":
        return signing_input + "."
    if alg.startswith("HS"):
        digest = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}[alg]
        signature = hmac.new(key, signing_input.encode(), digest).digest()
    else:
        signature = get_default_algorithms()[alg].sign(signing_input.encode(), key)
    return signing_input + "." + _b64(signature)


def mint_token(
    key: SigningKey,
    claims: Mapping[str, Any] | None = None,
    *,
    issuer: str,
    audience: str,
    now: float | None = None,
    kid: Any = DEFAULT,
    alg: str | None = None,
    drop: Iterable[str] = (),
    headers: Mapping[str, Any] | None = None,
    secret: bytes | None = None,
) -> str:
    """Return a signed JWT.

    Default claims: ``iss=issuer``, ``aud=audience``, ``sub``, ``iat=now``, ``exp=now+300``;
    ``claims`` override them (any JSON values) and ``drop`` removes them. ``kid`` defaults to
    the key's (``None`` leaves it out); ``alg`` defaults to the key's; ``headers`` adds header
    members. ``alg="none"`` gives an unsigned token; ``HS*`` is signed with ``secret``
    (default: the key's public PEM, the classic key-confusion attack).
    """
    now = time.time() if now is None else now
    body: dict[str, Any] = {
        "iss": issuer,
        "aud": audience,
        "sub": "user-1",
        "iat": int(now),
        "exp": int(now) + 300,
    }
    body.update(claims or {})
    for name in drop:
        body.pop(name, None)
    header: dict[str, Any] = dict(headers or {})
    chosen_kid = key.kid if kid is DEFAULT else kid
    if chosen_kid is not None:
        header["kid"] = chosen_kid
    alg = alg or key.alg
    if alg.startswith("HS"):
        return _sign(body, header, alg, secret if secret is not None else key.public_pem())
    return _sign(body, header, alg, key.private)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self.server.issuer._serve(self)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, port: int, issuer: OIDCIssuer) -> None:
        self.issuer = issuer
        super().__init__(("127.0.0.1", port), _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that timed out and hung up is part of the tests, not a failure


Mode = Literal["up", "503", "refuse"]


class OIDCIssuer:
    """An OIDC identity provider at ``http://127.0.0.1:{port}/realms/{realm}``.

    Serves ``{issuer}/.well-known/openid-configuration`` and the JWKS at ``jwks_uri``; the
    keys it publishes and the issuer it advertises can be changed while it runs.
    """

    def __init__(
        self,
        *,
        realm: str = "test",
        client_id: str = "igw-client",
        keys: Iterable[str] = ("RSA",),
    ) -> None:
        self.realm = realm
        self.client_id = client_id
        self._lock = threading.Lock()
        self._keys: list[SigningKey] = [SigningKey.generate(kty) for kty in keys]
        self.extra_jwks: list[dict[str, Any]] = []
        self.advertised_issuer: str | None = None
        self.jwks_delay = 0.0
        self.mode: Mode = "up"
        self.jwks_requests = 0
        self.discovery_requests = 0
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    # -- lifecycle -----------------------------------------------------------

    def start(self) -> OIDCIssuer:
        """Start serving (on the same port as before, after a stop)."""
        server = _Server(self.port, self)
        self.port = server.server_address[1]
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, name="oidc-issuer",
                                        kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        self.mode = "up"
        return self

    def stop(self) -> None:
        """Stop listening; connections are refused until :meth:`start` or :meth:`up`."""
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def down(self, how: Literal["refuse", "503"] = "refuse") -> None:
        """Become unavailable: refuse connections, or answer every request 503."""
        self.mode = how
        if how == "refuse":
            self.stop()
            self.mode = "refuse"

    def up(self) -> None:
        """Serve normally again."""
        if self._server is None:
            self.start()
        self.mode = "up"

    def __enter__(self) -> OIDCIssuer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- addresses -----------------------------------------------------------

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def issuer(self) -> str:
        """The issuer URL (no trailing slash), as ``iss`` in minted tokens."""
        return f"{self.base_url}/realms/{self.realm}"

    @property
    def jwks_uri(self) -> str:
        return f"{self.issuer}/protocol/openid-connect/certs"

    # -- keys ----------------------------------------------------------------

    @property
    def keys(self) -> list[SigningKey]:
        """The published keys, oldest first."""
        with self._lock:
            return list(self._keys)

    def add_key(self, kty: str = "RSA", **kwargs: Any) -> SigningKey:
        """Generate and publish a new key (``SigningKey.generate`` arguments); return it."""
        key = SigningKey.generate(kty, **kwargs)
        self.publish(key)
        return key

    def publish(self, key: SigningKey) -> None:
        """Publish an existing key."""
        with self._lock:
            self._keys.append(key)

    def remove_key(self, kid: str) -> None:
        """Stop publishing the key with this id."""
        with self._lock:
            self._keys = [k for k in self._keys if k.kid != kid]

    def rotate(self, kty: str = "RSA", **kwargs: Any) -> SigningKey:
        """Publish a new key and retire every old one; return the new key."""
        key = SigningKey.generate(kty, **kwargs)
        with self._lock:
            self._keys = [key]
        return key

    def jwks(self) -> dict[str, Any]:
        """Return the JWKS document as served."""
        with self._lock:
            return {"keys": [k.public_jwk() for k in self._keys] + list(self.extra_jwks)}

    def mint(
        self,
        claims: Mapping[str, Any] | None = None,
        *,
        key: SigningKey | None = None,
        kid: Any = DEFAULT,
        alg: str | None = None,
        drop: Iterable[str] = (),
        now: float | None = None,
        headers: Mapping[str, Any] | None = None,
        secret: bytes | None = None,
    ) -> str:
        """Return a token from this issuer, signed by ``key`` (default: the newest key).

        See :func:`mint_token` for the defaults and the meaning of each argument.
        """
        if key is None:
            key = self.keys[-1]
        return mint_token(key, claims, issuer=self.issuer, audience=self.client_id, now=now,
                          kid=kid, alg=alg, drop=drop, headers=headers, secret=secret)

    # -- serving -------------------------------------------------------------

    def _discovery(self) -> dict[str, Any]:
        return {
            "issuer": self.advertised_issuer if self.advertised_issuer is not None else self.issuer,
            "jwks_uri": self.jwks_uri,
            "authorization_endpoint": f"{self.issuer}/protocol/openid-connect/auth",
            "token_endpoint": f"{self.issuer}/protocol/openid-connect/token",
            "id_token_signing_alg_values_supported": ["RS256", "ES256", "EdDSA"],
        }

    def _serve(self, handler: BaseHTTPRequestHandler) -> None:
        if self.mode == "refuse":  # a kept-alive connection outlived the listener
            handler.close_connection = True
            return
        path = handler.path.split("?", 1)[0]
        doc: dict[str, Any] | None = None
        if path == f"/realms/{self.realm}/.well-known/openid-configuration":
            with self._lock:
                self.discovery_requests += 1
            doc = self._discovery()
        elif path == f"/realms/{self.realm}/protocol/openid-connect/certs":
            with self._lock:
                self.jwks_requests += 1
            if self.jwks_delay:
                time.sleep(self.jwks_delay)
            doc = self.jwks()
        if self.mode == "503":
            self._send(handler, 503, {"error": "temporarily unavailable"})
        elif doc is None:
            self._send(handler, 404, {"error": "not found"})
        else:
            self._send(handler, 200, doc)

    @staticmethod
    def _send(handler: BaseHTTPRequestHandler, status: int, doc: Any) -> None:
        body = json.dumps(doc).encode()
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)
