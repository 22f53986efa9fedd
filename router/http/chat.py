"""Chat messages → prompt text: the model's chat template, or a documented default.

With a template (``chat_template`` of the tokenizer, from the checkpoint's
``tokenizer_config.json``) it is rendered in Jinja2's immutable sandbox with ``messages``,
``add_generation_prompt=True`` and empty ``bos_token``/``eos_token`` (the router's tokenizer
adds BOS itself). Without one, the default is one line per message and an open assistant
turn::

    System: You are terse.
    User: Hi!
    Assistant:

(roles: system and developer → "System", user → "User", assistant → "Assistant", tool →
"Tool"). A template that fails to render is the request's fault: 400 on ``messages``.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

from router.errors import InvalidRequest

_ROLE_NAMES = {"system": "System", "developer": "System", "user": "User",
               "assistant": "Assistant", "tool": "Tool"}


@dataclass(slots=True, frozen=True)
class ChatMessage:
    role: str
    content: str


def default_chat_prompt(messages: list[ChatMessage]) -> str:
    lines = [f"{_ROLE_NAMES[m.role]}: {m.content}" for m in messages]
    return "\n".join(lines + ["Assistant:"])


@functools.lru_cache(maxsize=4)
def _compile(template: str):
    from jinja2.exceptions import TemplateError
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message: str) -> None:
        raise TemplateError(message)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = raise_exception
    return env.from_string(template)


def render_chat(messages: list[ChatMessage], template: str | None) -> str:
    """The prompt text for ``messages`` (InvalidRequest on ``messages`` if rendering fails)."""
    if not template:
        return default_chat_prompt(messages)
    try:
        compiled = _compile(template)
        return compiled.render(messages=[{"role": m.role, "content": m.content} for m in messages],
                               add_generation_prompt=True, bos_token="", eos_token="")
    except Exception as exc:   # jinja2 raises many types; all mean "this chat cannot render"
        raise InvalidRequest("messages", f"the model's chat template failed: "
                             f"{type(exc).__name__}: {str(exc)[:200]}") from None


def chat_template_of(tokenizer: Any) -> str | None:
    """The tokenizer's chat template, looking through the local backend's adapter."""
    template = getattr(tokenizer, "chat_template", None)
    if template is None:
        inner = getattr(tokenizer, "_tokenizer", None)
        template = getattr(inner, "chat_template", None)
    return template if isinstance(template, str) and template else None
