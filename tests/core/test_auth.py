"""Properties of igw_core.auth: which bearer tokens pass, why the others fail, what a client sees.

Pure: real keys and real signatures, no sockets, a fixed clock.
"""

from __future__ import annotations

import base64
import json
import logging
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from igw_core.auth import (
    ALLOWED_ALGORITHMS,
    NOT_READY_MESSAGE,
    UNAUTHORIZED_MESSAGE,
    AuthFailure,
    AuthReason,
    KeySet,
    log_failure,
    not_ready_error,
    unauthorized_error,
    verify_bearer,
)
from igw_core.responses import error_response
from tests.support.oidc_issuer import SigningKey, mint_token

ISSUER = "https://idp.example.com/realms/inference-gateway-realm"
CLIENT = "inference-gateway-client"
NOW = 1_700_000_000.0

RSA = SigningKey.generate("RSA", kid="rsa-1")
RSA_FREE = SigningKey.generate("RSA", kid="rsa-free", jwk_alg=False)  # JWK names no alg
EC256 = SigningKey.generate("EC", kid="ec-256", crv="P-256")
EC384 = SigningKey.generate("EC", kid="ec-384", crv="P-384")
ED25519 = SigningKey.generate("OKP", kid="ed-25519", crv="Ed25519")
ED448 = SigningKey.generate("OKP", kid="ed-448", crv="Ed448")
ALL_KEYS = (RSA, RSA_FREE, EC256, EC384, ED25519, ED448)
KEYS = KeySet.from_jwks({"keys": [k.public_jwk() for k in ALL_KEYS]})


def mint(key: SigningKey = RSA, claims: dict[str, Any] | None = None, **kwargs: Any) -> str:
    return mint_token(key, claims, issuer=ISSUER, audience=CLIENT, now=NOW, **kwargs)


def bearer(token: str) -> bytes:
    return b"Bearer " + token.encode()


def verify(authorization: bytes | None, keys: KeySet | None = KEYS, **kw: Any) -> dict[str, Any]:
    return verify_bearer(authorization, keys, issuer=ISSUER, audience=CLIENT, now=NOW, **kw)


def refused(authorization: bytes | None, keys: KeySet | None = KEYS, **kw: Any) -> AuthFailure:
    with pytest.raises(AuthFailure) as info:
        verify(authorization, keys, **kw)
    return info.value


# -- valid tokens --------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "alg"),
    [
        (RSA_FREE, "RS256"),
        (RSA_FREE, "RS384"),
        (RSA_FREE, "RS512"),
        (RSA_FREE, "PS256"),
        (RSA_FREE, "PS384"),
        (RSA_FREE, "PS512"),
        (EC256, "ES256"),
        (EC384, "ES384"),
        (ED25519, "EdDSA"),
        (ED448, "EdDSA"),
    ],
)
def test_every_supported_algorithm_verifies(key: SigningKey, alg: str) -> None:
    claims = verify(bearer(mint(key, alg=alg)))
    assert claims["sub"] == "user-1"
    assert claims["iss"] == ISSUER


def test_the_supported_algorithms_are_exactly_the_asymmetric_ones() -> None:
    assert set(ALLOWED_ALGORITHMS) == {
        "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA"
    }


@pytest.mark.parametrize("scheme", [b"Bearer", b"bearer", b"BEARER", b"bEaReR"])
def test_scheme_is_case_insensitive(scheme: bytes) -> None:
    assert verify(scheme + b" " + mint().encode())["aud"] == CLIENT


def test_surrounding_whitespace_is_tolerated() -> None:
    assert verify(b"  Bearer   " + mint().encode() + b" \t")["sub"] == "user-1"


def test_token_without_kid_is_tried_against_every_fitting_key() -> None:
    assert verify(bearer(mint(EC384, kid=None)))["sub"] == "user-1"
    assert verify(bearer(mint(RSA, kid=None)))["sub"] == "user-1"


def test_audience_may_be_a_list_containing_the_client_id() -> None:
    assert verify(bearer(mint(claims={"aud": ["account", CLIENT]})))["aud"] == ["account", CLIENT]


def test_azp_equal_to_client_id_is_accepted_when_aud_differs() -> None:
    # Keycloak access tokens: aud "account", azp the client that asked for the token.
    claims = verify(bearer(mint(claims={"aud": "account", "azp": CLIENT})))
    assert claims["azp"] == CLIENT


def test_azp_without_aud_is_accepted() -> None:
    assert verify(bearer(mint(claims={"azp": CLIENT}, drop=["aud"])))["azp"] == CLIENT


def test_exp_within_leeway_is_accepted() -> None:
    verify(bearer(mint(claims={"exp": NOW - 29})))
    verify(bearer(mint(claims={"exp": NOW - 5})), leeway=10.0)


def test_nbf_within_leeway_is_accepted() -> None:
    verify(bearer(mint(claims={"nbf": NOW + 29})))
    verify(bearer(mint(claims={"nbf": NOW - 1000})))


# -- refusals, one reason each ---------------------------------------------------


@pytest.mark.parametrize("header", [None, b"", b"   ", b"\t"])
def test_no_credentials_is_missing(header: bytes | None) -> None:
    assert refused(header).reason is AuthReason.MISSING


@pytest.mark.parametrize("header", [b"Basic dXNlcjpwYXNz", b"Token abc", b"Bearer\tabc.def.ghi"])
def test_another_scheme_is_wrong_scheme(header: bytes) -> None:
    failure = refused(header)
    assert failure.reason is AuthReason.WRONG_SCHEME
    assert "dXNlcjpwYXNz" not in failure.detail


def test_a_bare_token_without_scheme_is_wrong_scheme_and_not_logged() -> None:
    token = mint()
    failure = refused(token.encode())
    assert failure.reason is AuthReason.WRONG_SCHEME
    assert token not in failure.detail
    assert token.split(".")[0] not in failure.detail


@pytest.mark.parametrize(
    "token",
    [
        b"",
        b"abc",
        b"a.b",
        b"a.b.c.d",
        b"eyJ.eyJ.sig!",
        b"\xff\xfe.\x00.abc",
        b"e30.e30.",  # {} . {} : no alg
        b"bm90IGpzb24.e30.c2ln",  # header is not JSON
        b"W10.e30.c2ln",  # header is a list
        b"A" * 20_000,
    ],
)
def test_non_jwt_tokens_are_malformed(token: bytes) -> None:
    failure = refused(b"Bearer " + token)
    assert failure.reason in (AuthReason.MALFORMED, AuthReason.BAD_ALGORITHM)
    if token:
        assert token.decode("latin-1") not in failure.detail


def test_payload_that_is_not_an_object_is_malformed() -> None:
    head, _, sig = mint().split(".")
    assert refused(bearer(f"{head}.WzFd.{sig}")).reason is AuthReason.MALFORMED  # [1]


def test_non_canonical_base64_in_the_signature_is_malformed() -> None:
    token = mint(ED25519)  # 64-byte signature: 86 chars, the last carries 4 unused bits
    head, body, sig = token.split(".")
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    last = alphabet.index(sig[-1])
    twin = alphabet[last ^ 1]  # same decoded bytes, different spelling
    assert refused(bearer(f"{head}.{body}.{sig[:-1]}{twin}")).reason is AuthReason.MALFORMED


@pytest.mark.parametrize("exp", [None, "tomorrow", True, [1], {"a": 1}])
def test_missing_or_non_numeric_exp_is_malformed(exp: Any) -> None:
    token = mint(drop=["exp"]) if exp is None else mint(claims={"exp": exp})
    failure = refused(bearer(token))
    assert failure.reason is AuthReason.MALFORMED
    assert "exp" in failure.detail


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_signed_nan_or_infinite_times_are_malformed(value: float) -> None:
    # json.dumps writes NaN/Infinity; a validly signed token may carry them.
    for claim in ("exp", "nbf"):
        token = mint(claims={claim: value})
        assert "NaN" in base64.urlsafe_b64decode(token.split(".")[1] + "==").decode() or (
            "Infinity" in base64.urlsafe_b64decode(token.split(".")[1] + "==").decode()
        )
        assert refused(bearer(token)).reason is AuthReason.MALFORMED


def test_huge_integer_times_do_not_overflow() -> None:
    assert verify(bearer(mint(claims={"exp": 10**400})))["sub"] == "user-1"
    assert refused(bearer(mint(claims={"nbf": 10**400}))).reason is AuthReason.NOT_YET_VALID
    assert refused(bearer(mint(claims={"exp": -(10**400)}))).reason is AuthReason.EXPIRED


def test_expired_token_names_both_times() -> None:
    failure = refused(bearer(mint(claims={"exp": NOW - 3600})))
    assert failure.reason is AuthReason.EXPIRED
    assert failure.detail == (
        "token expired at 2023-11-14T21:13:20+00:00 (now 2023-11-14T22:13:20+00:00, leeway 30s)"
    )


def test_exp_just_past_the_leeway_is_expired() -> None:
    assert refused(bearer(mint(claims={"exp": NOW - 30}))).reason is AuthReason.EXPIRED


def test_not_yet_valid_token_names_both_times() -> None:
    failure = refused(bearer(mint(claims={"nbf": NOW + 120})))
    assert failure.reason is AuthReason.NOT_YET_VALID
    assert "token not valid before 2023-11-14T22:15:20+00:00" in failure.detail


def test_signature_by_another_key_with_the_same_kid_is_bad_signature() -> None:
    impostor = SigningKey.generate("RSA", kid=RSA.kid)
    failure = refused(bearer(mint(impostor)))
    assert failure.reason is AuthReason.BAD_SIGNATURE
    assert "'rsa-1'" in failure.detail


def test_token_without_kid_that_no_key_verifies_is_bad_signature() -> None:
    stranger = SigningKey.generate("EC", crv="P-384")
    assert refused(bearer(mint(stranger, kid=None))).reason is AuthReason.BAD_SIGNATURE


def test_tampered_payload_is_bad_signature() -> None:
    head, _, sig = mint(EC256).split(".")
    other = mint(EC256, claims={"sub": "admin"}).split(".")[1]
    assert refused(bearer(f"{head}.{other}.{sig}")).reason is AuthReason.BAD_SIGNATURE


@pytest.mark.parametrize(
    ("iss", "hint"),
    [
        (ISSUER + "/", "trailing slash differs"),
        (ISSUER.replace("https://", "http://"), "http vs https"),
        ("https://idp.example.com/realms/other", ""),
        ("https://keycloak.internal:8443/realms/inference-gateway-realm", ""),
    ],
)
def test_wrong_issuer_shows_expected_and_got(iss: str, hint: str) -> None:
    failure = refused(bearer(mint(claims={"iss": iss})))
    assert failure.reason is AuthReason.WRONG_ISSUER
    assert failure.detail.startswith(f"issuer mismatch: expected {ISSUER!r} got {iss!r}")
    assert hint in failure.detail


def test_missing_or_non_string_issuer_is_wrong_issuer() -> None:
    assert refused(bearer(mint(drop=["iss"]))).reason is AuthReason.WRONG_ISSUER
    assert refused(bearer(mint(claims={"iss": [ISSUER]}))).reason is AuthReason.WRONG_ISSUER


def test_wrong_issuer_never_asks_for_a_refetch() -> None:
    # A foreign realm's token has a foreign kid; it must not cost a JWKS fetch.
    stranger = SigningKey.generate("RSA", kid="foreign")
    failure = refused(bearer(mint(stranger, claims={"iss": "https://elsewhere/realms/x"})))
    assert failure.reason is AuthReason.WRONG_ISSUER
    assert failure.kid is None


@pytest.mark.parametrize(
    "claims",
    [{"aud": "someone-else"}, {"aud": ["a", "b"]}, {"aud": "account", "azp": "other"}, {"aud": 7}],
)
def test_wrong_audience(claims: dict[str, Any]) -> None:
    failure = refused(bearer(mint(claims=claims)))
    assert failure.reason is AuthReason.WRONG_AUDIENCE
    assert repr(CLIENT) in failure.detail


def test_missing_audience_is_wrong_audience() -> None:
    assert refused(bearer(mint(drop=["aud"]))).reason is AuthReason.WRONG_AUDIENCE


def test_unknown_kid_names_it_and_asks_for_a_refetch() -> None:
    new = SigningKey.generate("RSA", kid="k2")
    failure = refused(bearer(mint(new)))
    assert failure.reason is AuthReason.UNKNOWN_KID
    assert failure.kid == "k2"
    assert failure.detail.startswith("unknown key id 'k2'")


def test_unknown_kid_then_the_rotated_key_verifies() -> None:
    new = SigningKey.generate("EC", kid="k2")
    token = bearer(mint(new))
    assert refused(token).reason is AuthReason.UNKNOWN_KID
    rotated = KeySet.from_jwks({"keys": [new.public_jwk()]})
    assert verify(token, rotated)["sub"] == "user-1"


def test_no_kid_and_no_fitting_key_is_unknown_kid() -> None:
    rsa_only = KeySet.from_jwks({"keys": [RSA.public_jwk()]})
    failure = refused(bearer(mint(EC256, kid=None)), rsa_only)
    assert failure.reason is AuthReason.UNKNOWN_KID
    assert failure.kid == ""


def test_alg_none_is_bad_algorithm() -> None:
    failure = refused(bearer(mint(alg="none")))
    assert failure.reason is AuthReason.BAD_ALGORITHM
    assert "'none'" in failure.detail


@pytest.mark.parametrize("alg", ["HS256", "HS384", "HS512"])
def test_hmac_signed_with_the_public_key_pem_is_bad_algorithm(alg: str) -> None:
    token = mint(RSA, alg=alg, secret=RSA.public_pem())
    assert refused(bearer(token)).reason is AuthReason.BAD_ALGORITHM


def test_alg_that_does_not_fit_the_key_type_is_bad_algorithm() -> None:
    # Claims the EC key's kid but says RS256 (signed with the RSA key).
    token = mint(RSA, kid=EC256.kid, alg="RS256")
    failure = refused(bearer(token))
    assert failure.reason is AuthReason.BAD_ALGORITHM
    assert "'ec-256'" in failure.detail


def test_alg_must_match_the_alg_the_jwk_names() -> None:
    # RSA's JWK says RS256; the same RSA key signing PS256 is refused.
    assert refused(bearer(mint(RSA, alg="PS256"))).reason is AuthReason.BAD_ALGORITHM
    # RSA_FREE's JWK names no alg, so any RSA algorithm may use it.
    assert verify(bearer(mint(RSA_FREE, alg="PS256")))["sub"] == "user-1"


def test_es256_with_a_p384_key_is_bad_algorithm() -> None:
    token = mint(EC384, kid=EC384.kid, alg="ES384").split(".")
    header = mint(EC256, kid=EC384.kid, alg="ES256").split(".")[0]
    failure = refused(bearer(f"{header}.{token[1]}.{token[2]}"))
    assert failure.reason is AuthReason.BAD_ALGORITHM


def test_critical_header_extensions_are_refused() -> None:
    token = mint(headers={"crit": ["exp"]})
    assert refused(bearer(token)).reason is AuthReason.MALFORMED


def test_non_string_kid_is_malformed() -> None:
    assert refused(bearer(mint(kid=7))).reason is AuthReason.MALFORMED


def test_no_keys_yet_is_no_keys_only_for_a_plausible_token() -> None:
    assert refused(bearer(mint()), None).reason is AuthReason.NO_KEYS
    assert refused(None, None).reason is AuthReason.MISSING
    assert refused(b"Bearer garbage", None).reason is AuthReason.MALFORMED
    wrong = mint(claims={"iss": ISSUER + "/"})
    assert refused(bearer(wrong), None).reason is AuthReason.WRONG_ISSUER


def test_embedded_jwk_header_is_ignored() -> None:
    # An attacker's own key in the header must never be trusted.
    attacker = SigningKey.generate("EC", kid="rsa-1")
    token = mint(attacker, alg="ES256", headers={"jwk": attacker.public_jwk()})
    assert refused(bearer(token)).reason is AuthReason.BAD_ALGORITHM


def test_failure_details_never_contain_the_token() -> None:
    tokens = [
        mint(claims={"exp": 0}),
        mint(claims={"nbf": NOW + 9999}),
        mint(claims={"iss": "x"}),
        mint(claims={"aud": "x"}),
        mint(SigningKey.generate("RSA", kid="zz")),
        mint(SigningKey.generate("RSA", kid=RSA.kid)),
        mint(alg="none"),
    ]
    for token in tokens:
        failure = refused(bearer(token))
        for part in token.split("."):
            if part:
                assert part not in failure.detail
                assert part not in str(failure)


# -- key sets --------------------------------------------------------------------


def test_keyset_skips_keys_it_cannot_use() -> None:
    enc = SigningKey.generate("RSA", kid="enc", use="enc").public_jwk()
    doc = {
        "keys": [
            RSA.public_jwk(),
            enc,
            {"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"},
            {"kty": "RSA", "kid": "broken", "n": "!!", "e": "AQAB"},
            {**EC256.public_jwk(), "kid": "verify-no", "key_ops": ["encrypt"]},
            {**RSA.public_jwk(), "kid": "hs", "alg": "HS256"},
            {"kty": "EC", "kid": "p521", "crv": "P-521", "x": "AA", "y": "AA"},
            "not an object",
            {**EC256.public_jwk(), "kid": 5},
        ]
    }
    keys = KeySet.from_jwks(doc)
    assert keys.kids == ("rsa-1",)
    assert len(keys.skipped) == 8
    assert any("'enc'" in reason for reason in keys.skipped)


def test_keyset_without_keys_list_is_empty() -> None:
    assert len(KeySet.from_jwks({})) == 0
    assert len(KeySet.from_jwks({"keys": "nope"})) == 0


def test_keyset_drops_private_parts() -> None:
    from jwt.algorithms import RSAAlgorithm

    private = dict(RSAAlgorithm.to_jwk(RSA.private, as_dict=True))
    private.pop("key_ops", None)
    private.update(kid="with-d", alg="RS256", use="sig")
    keys = KeySet.from_jwks({"keys": [private]})
    (key,) = keys.keys
    assert not hasattr(key.key, "private_numbers")
    assert verify(bearer(mint(RSA, kid="with-d")), keys)["sub"] == "user-1"


# -- what the client and the log see ------------------------------------------------


@pytest.mark.parametrize("reason", list(AuthReason))
def test_unauthorized_error_never_reveals_the_reason(reason: AuthReason) -> None:
    error = unauthorized_error(reason)
    assert error.status == 401
    assert error.message == UNAUTHORIZED_MESSAGE
    effects = error_response(error, "req-1")
    head = effects[0]
    body = json.loads(effects[1].data)  # type: ignore[attr-defined]
    assert body == {
        "error": {
            "message": "invalid or missing bearer token",
            "type": "authentication_error",
            "code": "invalid_token",
        }
    }
    challenge = dict(head.headers)[b"www-authenticate"]  # type: ignore[attr-defined]
    assert challenge == b'Bearer error="invalid_token"'  # one challenge for every refusal


def test_not_ready_error_is_a_503_saying_so() -> None:
    error = not_ready_error()
    assert error.status == 503
    assert error.message == NOT_READY_MESSAGE == (
        "auth not ready: identity provider keys not loaded yet"
    )


def test_log_line_has_detail_only_in_development(caplog: pytest.LogCaptureFixture) -> None:
    failure = refused(bearer(mint(claims={"iss": ISSUER + "/"})))
    logger = logging.getLogger("igw")
    propagate = logger.propagate
    logger.propagate = True
    try:
        with caplog.at_level(logging.DEBUG, logger="igw.auth"):
            log_failure(failure, development=True, request_id="r1")
            log_failure(failure, development=False, request_id="r2")
    finally:
        logger.propagate = propagate
    dev, prod = (r for r in caplog.records if r.name == "igw.auth")
    assert dev.getMessage() == prod.getMessage() == "unauthorized"
    assert dev.reason == prod.reason == "wrong_issuer"  # type: ignore[attr-defined]
    assert dev.detail.startswith("issuer mismatch: expected")  # type: ignore[attr-defined]
    assert not hasattr(prod, "detail")


def test_no_keys_is_logged_as_not_ready(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("igw")
    propagate = logger.propagate
    logger.propagate = True
    try:
        with caplog.at_level(logging.DEBUG, logger="igw.auth"):
            log_failure(refused(bearer(mint()), None), development=False, request_id="r")
    finally:
        logger.propagate = propagate
    (line,) = (r for r in caplog.records if r.name == "igw.auth")
    assert line.getMessage() == "auth not ready"
    assert line.reason == "no_keys"  # type: ignore[attr-defined]


# -- nothing but AuthFailure, never a pass ----------------------------------------------

FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
MANGLE_BASE = [mint(RSA), mint(EC256), mint(ED25519), mint(RSA_FREE, alg="PS256")]
B64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
B64_CHARS = B64URL + ".=+/ !~"


def only_auth_failures(authorization: bytes) -> AuthFailure:
    try:
        claims = verify(authorization)
    except AuthFailure as failure:
        return failure
    raise AssertionError(f"verified: {claims!r}")


@FAST
@given(st.binary(max_size=600))
def test_arbitrary_bytes_never_verify(data: bytes) -> None:
    only_auth_failures(data)
    only_auth_failures(b"Bearer " + data)


@FAST
@given(st.text(alphabet=B64_CHARS, max_size=400))
def test_arbitrary_token_shaped_text_never_verifies(text: str) -> None:
    only_auth_failures(b"Bearer " + text.encode())


@st.composite
def mangled(draw: st.DrawFn) -> str:
    token = draw(st.sampled_from(MANGLE_BASE))
    # Mostly base64url characters, so many mangles still parse and reach the signature check.
    alphabet = draw(st.sampled_from([B64URL, B64URL, B64_CHARS]))
    chars = list(token)
    for _ in range(draw(st.integers(1, 3))):
        op = draw(st.sampled_from(["flip", "insert", "delete"]))
        at = draw(st.integers(0, max(len(chars) - 1, 0)))
        if op == "delete" and chars:
            del chars[at]
        elif op == "insert":
            chars.insert(at, draw(st.sampled_from(alphabet)))
        elif chars:
            old = chars[at]
            chars[at] = draw(st.sampled_from(alphabet).filter(lambda c, old=old: c != old))
    result = "".join(chars)
    if result == token:  # e.g. delete+insert of the same character
        result += "A"
    return result


@FAST
@given(mangled())
def test_mangled_valid_tokens_never_verify(token: str) -> None:
    only_auth_failures(bearer(token))


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner,
                                                                max_size=3),
    max_leaves=8,
)


@settings(max_examples=150, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(["iss", "aud", "azp", "exp", "nbf", "iat", "sub"]), JSON, max_size=7
    ),
    st.dictionaries(st.sampled_from(["kid", "typ", "cty", "x5t"]), JSON, max_size=3),
)
def test_signed_tokens_with_any_claim_shapes_verify_or_fail_cleanly(
    claims: dict[str, Any], header: dict[str, Any]
) -> None:
    token = mint(EC256, claims, headers=header, kid=header.get("kid", EC256.kid))
    try:
        verified = verify(bearer(token))
    except AuthFailure:
        return
    assert verified["iss"] == ISSUER
    assert CLIENT in (verified.get("aud"), verified.get("azp")) or CLIENT in verified["aud"]
    assert verified["exp"] > NOW - 30


@FAST
@given(st.sampled_from(MANGLE_BASE), st.data())
def test_any_changed_signature_character_is_refused(token: str, data: st.DataObject) -> None:
    head, body, sig = token.split(".")
    at = data.draw(st.integers(0, len(sig) - 1))
    char = data.draw(st.sampled_from(B64URL).filter(lambda c: c != sig[at]))
    failure = only_auth_failures(bearer(f"{head}.{body}.{sig[:at]}{char}{sig[at + 1:]}"))
    assert failure.reason in (AuthReason.BAD_SIGNATURE, AuthReason.MALFORMED)
