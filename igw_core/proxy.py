"""``/proxy/{provider}/{path}``: the raw passthrough's URL and header rules."""

from __future__ import annotations

from typing import Final
from urllib.parse import urlsplit

from igw_core.events import Headers
from igw_core.headers import CLIENT_CREDENTIALS, end_to_end
from igw_core.providers import Provider

PREFIX: Final = "/proxy/"


def split_proxy_path(path: str) -> tuple[str, str]:
    """Split ``/proxy/{provider}/{rest}`` into ``(provider, "/rest")``."""
    provider, _slash, rest = path[len(PREFIX) :].partition("/")
    return provider, "/" + rest


def proxy_url(provider: Provider, rest: str, query: str) -> str:
    """Return the upstream URL for ``rest`` (a path starting with ``/``).

    A path that already starts with the base URL's own path is not prefixed
    twice, so ``/proxy/openai/v1/chat/completions`` and
    ``/proxy/openai/chat/completions`` both reach ``{base}/chat/completions``.
    """
    base = urlsplit(provider.base_url)
    base_path = base.path.rstrip("/")
    if base_path and (rest == base_path or rest.startswith(base_path + "/")):
        url = f"{base.scheme}://{base.netloc}{rest}"
    else:
        url = provider.base_url + (rest if rest != "/" else "")
    return f"{url}?{query}" if query else url


def proxy_headers(client: Headers, provider: Provider) -> list[tuple[bytes, bytes]]:
    """Return the client's headers minus hop-by-hop and credentials, plus the provider's auth.

    A provider header the client already sent (e.g. ``anthropic-version``) is
    not added a second time: the client's own value is forwarded unchanged.
    """
    out = end_to_end(client, drop=CLIENT_CREDENTIALS)
    sent = {name for name, _ in out}
    out.extend(h for h in provider.auth_headers() if h[0] not in sent)
    return out
