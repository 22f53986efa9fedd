"""The published OpenAPI document is generated from the request models the parser reads: the
committed copy equals what the generator gives (a stale one fails here), the parser reads no
parameter the document lacks, and the document lists none the parser ignores."""
from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

from router.http import openai_api, openapi
from router.http.openai_api import _NEUTRAL, _Body
from router.http.request_models import COMPLETION, MODELS

IGNORED = {"user"}          # documented as ignored: accepted, never read


def test_the_committed_document_is_what_the_request_models_generate():
    committed = json.loads(openapi.PATH.read_text())
    assert committed == openapi.build(), "router/http/openapi.json is stale: run `make openapi`"


def _names_read_by_the_parser() -> set[str]:
    tree = ast.parse(Path(openai_api.__file__).read_text())
    names = set(_NEUTRAL)                        # read in a loop: b.raw(name)
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        f = node.func
        reads = (isinstance(f, ast.Attribute) and f.attr in ("get", "raw")
                 and isinstance(f.value, ast.Name) and f.value.id in ("b", "m")) or \
            (isinstance(f, ast.Name) and f.id == "_samples")
        args = node.args[1:] if isinstance(f, ast.Name) else node.args
        if reads and args and isinstance(args[0], ast.Constant):
            names.add(args[0].value)
    return names


def test_the_parser_reads_exactly_the_documented_parameters():
    read = _names_read_by_the_parser()
    declared = {f.name for m in MODELS for f in m.fields}
    assert read - declared == set()                       # nothing read that the document lacks
    assert declared - IGNORED - read == set()             # nothing documented that is never read
    assert "n" in read and "best_of" in read and "logprobs" in read


def test_reading_an_undeclared_parameter_fails_loudly():
    with pytest.raises(KeyError, match="declares no field 'typo'"):
        _Body({"typo": 1}, COMPLETION).get("typo")


def test_the_generated_document_states_the_sample_limits_and_which_routes_are_open():
    doc = openapi.build()
    props = doc["components"]["schemas"]["CompletionRequest"]["properties"]
    assert props["n"]["maximum"] == props["best_of"]["maximum"] == 16
    assert doc["paths"]["/health"]["get"]["security"] == []          # open
    assert doc["paths"]["/v1/completions"]["post"]["security"] == [{"bearer": []}]
