"""Length distributions parse from spec strings and sample what they say."""
from __future__ import annotations

import numpy as np
import pytest

from loadtest.distributions import parse_length
from loadtest.errors import SpecError


def sample(spec: str, n: int = 20_000) -> np.ndarray:
    return np.asarray(parse_length(spec).sample(np.random.default_rng(3), n))


def test_fixed_and_bare_integers_always_give_the_value():
    assert set(sample("fixed:128", 100)) == {128}
    assert set(sample("64", 100)) == {64}


def test_uniform_covers_its_closed_range_only():
    values = sample("uniform:10,20")
    assert values.min() == 10 and values.max() == 20
    assert values.mean() == pytest.approx(15, rel=0.01)


def test_normal_and_lognormal_have_their_stated_centre():
    assert sample("normal:200,20").mean() == pytest.approx(200, rel=0.01)
    lognormal = sample("lognormal:100,0.5")
    assert np.median(lognormal) == pytest.approx(100, rel=0.03)
    assert lognormal.mean() == pytest.approx(parse_length("lognormal:100,0.5").mean(), rel=0.03)


def test_samples_are_always_at_least_one_token():
    assert sample("normal:2,50").min() >= 1


def test_empirical_draws_only_observed_lengths(tmp_path):
    path = tmp_path / "lengths.txt"
    path.write_text("5\n7\n7\n11\n")
    assert set(sample(f"empirical:{path}", 500)) == {5, 7, 11}


@pytest.mark.parametrize("spec, message", [
    ("zipf:3", "unknown distribution"), ("uniform:5", "expected 2"),
    ("uniform:9,3", "low <= high"), ("fixed:0", ">= 1"), ("normal:a,b", "numbers"),
    ("lognormal:100,-1", "sigma >= 0"), ("empirical:/nonexistent/x", "cannot read"),
])
def test_bad_specs_raise_a_spec_error_naming_the_problem(spec, message):
    with pytest.raises(SpecError, match=message):
        parse_length(spec)
