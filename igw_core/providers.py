"""The provider table: ids, default base URLs, auth styles and endpoints.

Mirrors the upstream Inference Gateway's provider registry so an operator's
``{ID}_API_URL`` / ``{ID}_API_KEY`` variables mean the same thing here.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class AuthStyle(enum.Enum):
    """How a provider's API key is attached to outbound requests."""

    BEARER = "bearer"  # Authorization: Bearer <key>
    X_API_KEY = "xheader"  # x-api-key: <key> (Anthropic)
    NONE = "none"  # keyless (local Ollama)


@dataclass(frozen=True, slots=True)
class ProviderSpec:
    """Static facts about one provider.

    Attributes:
        id: the lower-case id used in ``provider/model`` and ``/proxy/{id}``.
        base_url: default base URL, overridden by ``{ID}_API_URL``.
        auth: how the key is sent.
        chat_path: path of the chat-completions endpoint, relative to the base URL.
        models_path: path of the model list, relative to the base URL.
        extra_headers: headers every request to this provider carries.
        stream_usage: whether the provider accepts ``stream_options.include_usage``.
        embeddings_path: path of its OpenAI-compatible embeddings endpoint, if it has one.
        responses_path: path of its OpenAI Responses API, if it has one.
        messages_path: path of its Anthropic Messages API, if it has one (requests of
            ``/v1/messages`` for any other provider are translated to chat completions).
    """

    id: str
    base_url: str
    auth: AuthStyle
    chat_path: str = "/chat/completions"
    models_path: str = "/models"
    extra_headers: tuple[tuple[str, str], ...] = ()
    stream_usage: bool = True
    embeddings_path: str | None = None
    responses_path: str | None = None
    messages_path: str | None = None


PROVIDER_SPECS: dict[str, ProviderSpec] = {
    spec.id: spec
    for spec in (
        ProviderSpec("openai", "https://api.openai.com/v1", AuthStyle.BEARER,
                     embeddings_path="/embeddings", responses_path="/responses"),
        ProviderSpec(
            "anthropic",
            "https://api.anthropic.com/v1",
            AuthStyle.X_API_KEY,
            extra_headers=(("anthropic-version", "2023-06-01"),),
            messages_path="/messages",
        ),
        ProviderSpec("groq", "https://api.groq.com/openai/v1", AuthStyle.BEARER,
                     responses_path="/responses"),
        ProviderSpec("ollama", "http://ollama:8080/v1", AuthStyle.NONE,
                     embeddings_path="/embeddings"),
        ProviderSpec("ollama_cloud", "https://ollama.com/v1", AuthStyle.BEARER),
        ProviderSpec("llamacpp", "http://llamacpp:8080/v1", AuthStyle.BEARER,
                     embeddings_path="/embeddings"),
        ProviderSpec(
            "cloudflare",
            "https://api.cloudflare.com/client/v4/accounts/{ACCOUNT_ID}/ai",
            AuthStyle.BEARER,
            chat_path="/v1/chat/completions",
            models_path="/finetunes/public?limit=1000",
        ),
        ProviderSpec(
            "cohere",
            "https://api.cohere.ai",
            AuthStyle.BEARER,
            chat_path="/compatibility/v1/chat/completions",
            models_path="/v1/models",
            stream_usage=False,
            embeddings_path="/compatibility/v1/embeddings",
        ),
        ProviderSpec("deepseek", "https://api.deepseek.com", AuthStyle.BEARER),
        ProviderSpec(
            "google", "https://generativelanguage.googleapis.com/v1beta/openai", AuthStyle.BEARER,
            embeddings_path="/embeddings",
        ),
        ProviderSpec("mistral", "https://api.mistral.ai/v1", AuthStyle.BEARER, stream_usage=False,
                     embeddings_path="/embeddings"),
        ProviderSpec("minimax", "https://api.minimax.io/v1", AuthStyle.BEARER),
        ProviderSpec("moonshot", "https://api.moonshot.ai/v1", AuthStyle.BEARER),
        ProviderSpec("nvidia", "https://integrate.api.nvidia.com/v1", AuthStyle.BEARER,
                     embeddings_path="/embeddings"),
        ProviderSpec("zai", "https://api.z.ai/api/paas/v4", AuthStyle.BEARER),
    )
}

#: The built-in keyless, network-free provider enabled by ``igw --demo``.
DEMO_SPEC = ProviderSpec("demo", "demo://local", AuthStyle.NONE)

PROVIDER_IDS: tuple[str, ...] = tuple(PROVIDER_SPECS)


@dataclass(frozen=True, slots=True)
class Provider:
    """A provider as configured for this process: spec, effective URL and key.

    Attributes:
        spec: the static facts.
        base_url: effective base URL without a trailing slash.
        api_key: the key, or ``""`` when none is configured.
        url_set: whether ``{ID}_API_URL`` was set (a keyless provider counts as
            configured, and is listed in ``/v1/models``, only then).
    """

    spec: ProviderSpec
    base_url: str
    api_key: str = field(repr=False)
    url_set: bool = False
    #: The authenticating headers, made once (see :meth:`auth_headers`).
    _auth: tuple[tuple[bytes, bytes], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        headers = [(k.encode(), v.encode()) for k, v in self.spec.extra_headers]
        if self.api_key:
            if self.spec.auth is AuthStyle.X_API_KEY:
                headers.append((b"x-api-key", self.api_key.encode()))
            elif self.spec.auth is AuthStyle.BEARER:
                headers.append((b"authorization", b"Bearer " + self.api_key.encode()))
        object.__setattr__(self, "_auth", tuple(headers))  # frozen: set once, here

    @property
    def id(self) -> str:
        """The provider id."""
        return self.spec.id

    @property
    def usable(self) -> bool:
        """Whether requests may be sent: it has a key, or needs none."""
        return bool(self.api_key) or self.spec.auth is AuthStyle.NONE

    @property
    def configured(self) -> bool:
        """Whether the operator set this provider up (a key, or a keyless URL)."""
        return bool(self.api_key) or (self.spec.auth is AuthStyle.NONE and self.url_set)

    def auth_headers(self) -> tuple[tuple[bytes, bytes], ...]:
        """Return the headers that authenticate a request to this provider."""
        return self._auth

    def url(self, path: str) -> str:
        """Join ``path`` (starting with ``/``) onto the base URL."""
        return self.base_url + path
