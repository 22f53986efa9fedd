"""Tokenizers: HF ``tokenizer.json`` through ``tokenizers``, or a byte-level one for presets.

``IncrementalDetokenizer`` turns a growing token list into text deltas without
re-decoding everything each step, and without emitting half of a multi-byte character.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Protocol

from engine.errors import ModelLoadError

logger = logging.getLogger(__name__)


class Tokenizer(Protocol):
    bos_token_id: int | None
    eos_token_id: int | None
    chat_template: str | None

    def encode(self, text: str, add_bos: bool = True) -> list[int]: ...
    def decode(self, ids: list[int]) -> str: ...


class HFTokenizer:
    def __init__(self, model_dir: Path, bos_token_id: int | None, eos_token_id: int | None):
        from tokenizers import Tokenizer as _Tok
        path = model_dir / "tokenizer.json"
        if not path.exists():
            raise ModelLoadError(f"missing tokenizer file: {path}")
        try:
            self._tok = _Tok.from_file(str(path))
        except Exception as exc:  # tokenizers raises a bare Exception on bad JSON
            raise ModelLoadError(f"{path}: cannot load tokenizer ({exc})") from exc
        self.bos_token_id = bos_token_id
        self.eos_token_id = eos_token_id
        self.chat_template = None
        cfg_path = model_dir / "tokenizer_config.json"
        if cfg_path.exists():
            try:
                self.chat_template = json.loads(cfg_path.read_text()).get("chat_template")
            except ValueError:
                logger.warning("%s is not valid JSON; ignoring it", cfg_path)
        # Does the post-processor already add BOS? Then encode() must not add it twice.
        probe = self._tok.encode("a").ids
        self._adds_bos = bool(probe) and bos_token_id is not None and probe[0] == bos_token_id

    def encode(self, text: str, add_bos: bool = True) -> list[int]:
        ids = self._tok.encode(text, add_special_tokens=add_bos).ids
        if add_bos and self.bos_token_id is not None and not self._adds_bos:
            ids = [self.bos_token_id, *ids]
        return ids

    def decode(self, ids: list[int]) -> str:
        return self._tok.decode(ids, skip_special_tokens=True)


class ByteTokenizer:
    """Byte-level tokenizer for random-weight presets: id = byte + 3; 0 pad, 1 BOS, 2 EOS.
    Ids beyond the byte range have no text (random models emit them freely)."""

    OFFSET = 3

    def __init__(self, vocab_size: int):
        self.vocab_size = vocab_size
        self.bos_token_id, self.eos_token_id = 1, 2
        self.chat_template = None

    def encode(self, text: str, add_bos: bool = True) -> list[int]:
        ids = [b + self.OFFSET for b in text.encode("utf-8")]
        return [self.bos_token_id, *ids] if add_bos else ids

    def decode(self, ids: list[int]) -> str:
        data = bytes(i - self.OFFSET for i in ids if self.OFFSET <= i < 256 + self.OFFSET)
        return data.decode("utf-8", errors="replace")


class IncrementalDetokenizer:
    """Text deltas for a growing token list (vLLM-style prefix/read offsets)."""

    __slots__ = ("tokenizer", "prefix_offset", "read_offset", "text")

    def __init__(self, tokenizer: Tokenizer, prompt_ids: list[int]):
        self.tokenizer = tokenizer
        # Start a few tokens back so leading-space handling matches a full decode.
        self.prefix_offset = max(len(prompt_ids) - 5, 0)
        self.read_offset = len(prompt_ids)
        self.text = ""

    def step(self, all_ids: list[int]) -> str:
        prefix = self.tokenizer.decode(all_ids[self.prefix_offset:self.read_offset])
        full = self.tokenizer.decode(all_ids[self.prefix_offset:])
        if len(full) > len(prefix) and not full.endswith("\ufffd"):
            delta = full[len(prefix):]
            self.prefix_offset, self.read_offset = self.read_offset, len(all_ids)
            self.text += delta
            return delta
        return ""
