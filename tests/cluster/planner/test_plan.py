"""The planner's search: DistServe's direction on a GPU roofline (disaggregation wins a tight
TPOT objective on a prefill-heavy workload; its P:D ratio follows the input/output ratio),
the config it prints, and the CLI's errors."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from cluster.planner.plan import candidates, fewest, plan, run_config
from cluster.planner.profile import roofline
from cluster.planner.simulator import Layout, Workload

REPO = Path(__file__).resolve().parents[3]
PROF = roofline("llama-70b", "h100", 8)


def best_disaggregated(ranked):
    return next(c for c in ranked if c.layout.mode == "disaggregated")


def test_candidates_cover_colocated_budgets_and_every_split_or_a_spread_of_them():
    small = candidates(4)
    assert [c.mode for c in small].count("colocated") == 4
    assert [(c.prefill_workers, c.decode_workers) for c in small if c.mode == "disaggregated"] == [(1, 3), (2, 2), (3, 1)]
    big = [c for c in candidates(128, max_splits=12) if c.mode == "disaggregated"]
    assert 8 <= len(big) <= 12 and big[0].prefill_workers == 1 and big[-1].prefill_workers == 127


def test_disaggregation_wins_a_tight_tpot_objective_on_a_prefill_heavy_workload():
    w = Workload.synthetic(1500, rate=30, prompt=3000, output=100, seed=1)
    ranked = plan(PROF, w, 16, ttft_ms=1500, tpot_ms=12, rate=30)
    assert ranked[0].layout.mode == "disaggregated"
    colocated = max(c.attainment for c in ranked if c.layout.mode == "colocated")
    assert ranked[0].attainment > colocated


def test_the_prefill_share_follows_the_input_output_ratio():
    shares = []
    for prompt, output in ((4000, 50), (1000, 400)):
        w = Workload.synthetic(600, rate=1, prompt=prompt, output=output, seed=2)
        ranked = plan(PROF, w, 16, ttft_ms=2000, tpot_ms=30)
        shares.append(best_disaggregated(ranked).layout.prefill_workers)
    assert shares[0] > shares[1], shares


def test_the_best_layout_comes_with_its_config_and_helm_values():
    out = run_config(Layout("disaggregated", 3, 5), PROF)
    assert out["set"][:4] == ["mode=disaggregated", "pools.prefill.workers=3", "pools.decode.workers=5",
                              "router.prefill_overflow=false"]      # as simulated
    assert "config.router.prefill_overflow=false" in out["helm"]
    assert "pools.decode.gpusPerWorker=8" in out["helm"]
    co = run_config(Layout("colocated", 0, 4, 1024), PROF)
    assert "model.max_num_batched_tokens=1024" in co["set"] and "pools.decode.replicas=4" in co["helm"]


def test_tandem_plan_prints_a_ranking_and_refuses_a_bad_profile_naming_the_field(tmp_path):
    good = tmp_path / "p.json"
    PROF.save(good)
    cmd = [sys.executable, "-m", "cluster.cli", "plan", "--profile", str(good), "--workload", "synthetic:2000:100",
           "--requests", "300", "--gpus", "64", "--ttft-ms", "1000", "--tpot-ms", "20", "--rate", "10", "--top", "3"]
    out = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert [r["rank"] for r in rows[:3]] == [1, 2, 3] and rows[-1]["best"] == rows[0]["layout"]
    assert all(r["prefill_workers"] + r["decode_workers"] == 8 for r in rows[:3] if r["mode"] == "disaggregated")
    data = json.loads(good.read_text())
    data["decode"]["ms_per_seq"] = -2
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(data))
    out = subprocess.run(cmd[:5] + [str(bad)] + cmd[6:], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    assert out.stderr.strip().endswith("decode.ms_per_seq: must be a finite number >= 0, got -2")


def test_the_fewest_workers_for_a_rate_meet_it_and_one_fewer_does_not():
    w = Workload.synthetic(800, rate=20, prompt=2000, output=100, seed=4)
    needed, ranked = fewest(PROF, w, 20.0, ttft_ms=1500, tpot_ms=25, max_workers=32)
    assert ranked[0].attainment >= 0.9
    assert plan(PROF, w, needed - 1, 1500, 25, rate=20.0)[0].attainment < 0.9
    assert needed < 32
    with pytest.raises(ValueError, match="even 2 workers"):
        fewest(PROF, w, 500.0, ttft_ms=1500, tpot_ms=25, max_workers=2)


def _cpu(threads: int, speedup: float):
    """A CPU worker of ``threads`` threads, ``speedup`` times the one-thread worker's speed."""
    from cluster.planner.profile import DecodeCost, HandoffCost, Limits, PrefillCost, Profile
    return Profile(f"cpu{threads}", "cpu", "manual", 10_000, threads_per_worker=threads,
                   prefill=PrefillCost(2.0 / speedup, 0.2 / speedup), decode=DecodeCost(4.0 / speedup, 0.3 / speedup),
                   handoff=HandoffCost(1.0, 5.0), limits=Limits(64, 100_000))


@pytest.mark.parametrize("speedup,size", [(1.3, 1), (3.0, 2)])
def test_the_worker_size_is_searched_and_follows_how_well_threads_scale(speedup, size):
    from cluster.planner.plan import fewest_resources, plan_resources
    profiles = [_cpu(1, 1.0), _cpu(2, speedup)]
    w = Workload.synthetic(300, rate=4, prompt=400, output=40, seed=1)
    ranked = plan_resources(profiles, w, 4, ttft_ms=500, tpot_ms=60, rate=12.0)
    assert {c.profile.threads_per_worker for c in ranked} == {1, 2}
    assert all((c.layout.prefill_workers + c.layout.decode_workers) * c.profile.threads_per_worker == 4
               for c in ranked)
    assert ranked[0].profile.threads_per_worker == size and ranked[0].row()["threads_per_worker"] == size
    cores, best = fewest_resources(profiles, w, 12.0, ttft_ms=500, tpot_ms=60, max_resources=16)
    assert best[0].attainment >= 0.9 and cores % best[0].profile.threads_per_worker == 0


def test_tandem_plan_searches_worker_sizes_on_cores_and_names_what_is_missing(tmp_path):
    paths = []
    for threads, speedup in ((1, 1.0), (2, 1.6)):
        paths += ["--profile", str(tmp_path / f"cpu{threads}.json")]
        _cpu(threads, speedup).save(paths[-1])
    base = [sys.executable, "-m", "cluster.cli", "plan", *paths, "--workload", "synthetic:400:40",
            "--requests", "200", "--ttft-ms", "500", "--tpot-ms", "60", "--rate", "8", "--top", "40"]
    out = subprocess.run(base + ["--cores", "4"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    rows = [json.loads(line) for line in out.stdout.splitlines()]
    assert {r["profile"] for r in rows[:-1]} == {"cpu1", "cpu2"}
    best = rows[-1]
    threads = {"cpu1": 1, "cpu2": 2}[best["profile"]]
    assert f"pools.decode.cpus_per_worker={threads}" in best["set"]
    out = subprocess.run(base + ["--workers", "4"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "need --cores or --gpus" in out.stderr
    out = subprocess.run(base + ["--gpus", "4"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "give --cores" in out.stderr
