"""A resumed stream through the router (GenerateRequest.resume) on the in-process backend:
no engine here holds the request, so its prompt plus what the client has is computed again
and the stream goes on after it; nothing repeated or missing, stop strings included."""
from __future__ import annotations

import grpc
import pytest

from protos.tandem.v1 import generate_pb2

PROMPT = "Once upon a time"


def request(request_id="", resume=None, **sampling):
    req = generate_pb2.GenerateRequest(text=PROMPT, request_id=request_id,
                                       sampling=generate_pb2.SamplingParams(**sampling))
    if resume is not None:
        ids, chars = resume
        req.resume.SetInParent()
        req.resume.token_ids.extend(ids)
        req.resume.text_chars = chars
    return req


def stream(stub, req):
    msgs = list(stub.Generate(req, timeout=60))
    deltas = [(list(m.delta.token_ids), m.delta.text, m.delta.index) for m in msgs if m.HasField("delta")]
    return deltas, msgs[-1].finished


@pytest.mark.parametrize("sampling", [
    dict(max_tokens=40, temperature=0.0, ignore_eos=True),
    dict(max_tokens=60, temperature=0.0, stop=["Lily"]),      # held-back text at the cut
])
def test_a_resume_after_any_delta_continues_exactly_where_the_client_stopped(stub, sampling):
    whole, finished = stream(stub, request(**sampling))
    ids = [t for d in whole for t in d[0]]
    text = "".join(d[1] for d in whole)
    for cut in range(1, len(whole), max(1, len(whole) // 5)):
        have_ids = [t for d in whole[:cut] for t in d[0]]
        have_text = "".join(d[1] for d in whole[:cut])
        rest, end = stream(stub, request(f"resume-{cut}", (have_ids, len(have_text)), **sampling))
        assert have_ids + [t for d in rest for t in d[0]] == ids
        assert have_text + "".join(d[1] for d in rest) == text
        assert rest[0][2] == len(have_ids)                   # deltas index the whole completion
        assert end.reason == finished.reason
        assert end.usage.completion_tokens == len(ids)


def test_a_resume_with_every_token_gets_only_the_finish(stub):
    whole, finished = stream(stub, request(max_tokens=6, temperature=0.0, ignore_eos=True))
    ids = [t for d in whole for t in d[0]]
    rest, end = stream(stub, request("resume-all", (ids, len("".join(d[1] for d in whole))),
                                     max_tokens=6, temperature=0.0, ignore_eos=True))
    assert rest == [] and end.reason == generate_pb2.FINISH_REASON_LENGTH
    assert end.usage.completion_tokens == 6


@pytest.mark.parametrize("request_id, resume, sampling, field", [
    ("", ([5], 1), dict(max_tokens=4), "resume"),
    ("r1", ([5, 10**6], 2), dict(max_tokens=4), "resume.token_ids[1]"),
    ("r2", ([5, 6, 7], 3), dict(max_tokens=2), "resume.token_ids"),
])
def test_a_bad_resume_is_invalid_argument_naming_the_field(stub, request_id, resume, sampling, field):
    with pytest.raises(grpc.RpcError) as err:
        list(stub.Generate(request(request_id, resume, **sampling), timeout=30))
    assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert dict(err.value.trailing_metadata()).get("tandem-field") == field
