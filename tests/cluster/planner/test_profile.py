"""Profiles: the JSON round trip, every bad field named, and roofline figures that follow
from the hardware and the model's shape."""
from __future__ import annotations

import json

import pytest

from cluster.planner.profile import Profile, ProfileError, roofline


def test_a_profile_round_trips_through_its_json(tmp_path):
    prof = roofline("llama-8b", "h100", 1)
    path = tmp_path / "p.json"
    prof.save(path)
    assert Profile.load(path) == prof
    assert json.loads(path.read_text())["version"] == 1


@pytest.mark.parametrize("change, field", [
    ({"version": 2}, "version"),
    ({"prefill": {"ms_per_token": -1.0}}, "prefill.ms_per_token"),
    ({"decode": {"base_ms": "fast"}}, "decode.base_ms"),
    ({"decode": {"per_seq": 1.0}}, "decode.per_seq"),
    ({"handoff": {"gb_per_s": 0.0}}, "handoff.gb_per_s"),
    ({"limits": {"max_batch": 0}}, "limits.max_batch"),
    ({"limits": {"kv_tokens": 1.5}}, "limits.kv_tokens"),
    ({"overhead": {"step_factor": 0}}, "overhead.step_factor"),
    ({"kv_bytes_per_token": None}, "kv_bytes_per_token"),
    ({"name": ""}, "name"),
    ({"speed": 3}, "speed"),
])
def test_a_bad_field_is_refused_by_name(change, field):
    data = json.loads(roofline("llama-8b", "h100", 1).to_json())
    for key, value in change.items():
        if isinstance(value, dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    with pytest.raises(ProfileError) as info:
        Profile.from_dict(data)
    assert info.value.field == field


def test_an_unreadable_or_non_json_file_is_a_profile_error(tmp_path):
    with pytest.raises(ProfileError, match="cannot read"):
        Profile.load(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(ProfileError, match="not JSON"):
        Profile.load(tmp_path / "bad.json")


def test_the_roofline_reads_the_weights_once_a_step_and_computes_prompts_at_mfu():
    prof = roofline("llama-70b", "h100", 8, mfu=0.5, mbu=0.7)
    weights_ms = 70e9 * 2 / (3.35e12 * 8 * 0.7) * 1e3
    assert prof.decode.base_ms == pytest.approx(weights_ms + 1.0)
    assert prof.prefill.ms_per_token == pytest.approx(2 * 70e9 / (989e12 * 8 * 0.5) * 1e3)
    assert prof.kv_bytes_per_token == 2 * 80 * 8 * 128 * 2
    assert prof.limits.kv_tokens == int((80e9 * 8 * 0.9 - 140e9) / prof.kv_bytes_per_token)
    # More devices per worker: prompts and steps get faster.
    assert roofline("llama-70b", "h100", 4).decode.base_ms > prof.decode.base_ms
