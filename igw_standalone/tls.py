"""The standalone server's TLS: checking the certificate and key files, building the context.

The core only knows the two paths (``SERVER_TLS_CERT_PATH``, ``SERVER_TLS_KEY_PATH``);
opening and parsing the files happens here, before anything is served.
"""

from __future__ import annotations

import ssl

from igw_core.config import ConfigProblem, Settings

CERT_VARIABLE = "SERVER_TLS_CERT_PATH"
KEY_VARIABLE = "SERVER_TLS_KEY_PATH"


class EncryptedKeyError(ssl.SSLError):
    """The private key is encrypted; the server has no way to ask for its password."""


def _refuse_password() -> bytes:
    # Without a callback OpenSSL would prompt on the terminal and hang a server at startup.
    raise EncryptedKeyError("the private key is encrypted")


def _load(context: ssl.SSLContext, cert_path: str, key_path: str) -> None:
    context.load_cert_chain(cert_path, key_path, password=_refuse_password)


def server_ssl_context(settings: Settings) -> ssl.SSLContext | None:
    """Return the server's TLS context (ALPN ``h2``, ``http/1.1``), or ``None`` without TLS.

    Raises:
        OSError: a file cannot be read.
        ssl.SSLError: the files are not a PEM certificate and its unencrypted private key
            (:class:`EncryptedKeyError` for an encrypted key).
    """
    if not settings.server_tls_cert_path:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    _load(context, settings.server_tls_cert_path, settings.server_tls_key_path)
    context.set_alpn_protocols(["h2", "http/1.1"])
    return context


def tls_problems(cert_path: str, key_path: str) -> tuple[ConfigProblem, ...]:
    """Return what is wrong with the certificate and key files (``()`` when nothing is).

    Each path that is set must name a readable file; when both are set they must hold a
    PEM certificate and its unencrypted PEM private key. An empty path is not checked here
    (``load_settings`` refuses one path without the other). Never raises.
    """
    problems = []
    for variable, path in ((CERT_VARIABLE, cert_path), (KEY_VARIABLE, key_path)):
        if not path:
            continue
        try:
            with open(path, "rb"):
                pass
        except OSError as error:
            problems.append(ConfigProblem(
                variable, path, f"the path of a readable file (here: {error.strerror or error})"))
    if problems or not (cert_path and key_path):
        return tuple(problems)
    return _pair_problems(cert_path, key_path)


def _pair_problems(cert_path: str, key_path: str) -> tuple[ConfigProblem, ...]:
    """Return what is wrong with two readable files meant as a certificate and its key."""
    try:
        _load(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER), cert_path, key_path)
    except EncryptedKeyError:
        return (ConfigProblem(KEY_VARIABLE, key_path,
                              "an unencrypted PEM private key (this one is encrypted)"),)
    except ssl.SSLError as error:
        if error.reason == "KEY_VALUES_MISMATCH":
            return (ConfigProblem(
                KEY_VARIABLE, key_path,
                f"the private key of the certificate in {CERT_VARIABLE}={cert_path!r} "
                "(this key does not match it)"),)
        if not _is_certificate(cert_path):
            return (ConfigProblem(CERT_VARIABLE, cert_path,
                                  "a PEM certificate file (this file holds no certificate)"),)
        return (ConfigProblem(KEY_VARIABLE, key_path,
                              "a PEM private key file (OpenSSL found no usable key in it)"),)
    except OSError as error:  # the file vanished between the two checks
        return (ConfigProblem(CERT_VARIABLE, cert_path,
                              f"the path of a readable file (here: {error.strerror or error})"),)
    return ()


def _is_certificate(path: str) -> bool:
    """Return whether ``path`` holds at least one PEM certificate."""
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cafile=path)
    except (ssl.SSLError, OSError):
        return False
    return True
