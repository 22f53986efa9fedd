"""lm-evaluation-harness against Tandem: its ``local-completions`` model pointed at a running
``tandem serve`` scores the same as its ``hf`` model on the same checkpoint.

    .venv/bin/python -m benchmarks.lm_eval_check [--modes default,colocated]
    make eval-check

lm-eval (0.4.13 with its ``api`` and ``hf`` extras, and torch / transformers pinned to the
project's) is installed on first use into its own venv, ``.venv-eval`` (gitignored; never the
project's: it pulls datasets, evaluate, accelerate and more). The tasks are built from local
files (``benchmarks/lm_eval_tasks``): ``tandem_story_mc``, multiple choice scored by
loglikelihood (lm-eval sends ``echo: true`` with ``logprobs``, so it needs the prompt's
logprobs) and ``tandem_story_gen``, greedy ``generate_until`` with a stop string. Both sides
add BOS (``add_bos_token=True``), so they score the same token sequences.

The hf run goes first, then for each mode a fresh ``tandem serve`` (``default``: the defaults
exactly, disaggregated; ``colocated``: two colocated workers) and lm-eval against it. JSON lines:
per task and system its metric; per task and mode ``worst_loglik_diff`` (per sample and
choice, against hf), ``greedy_flags_equal``, ``generations_equal`` (after lm-eval's own
leading-whitespace rule) and ``scores_equal``. Exit status 1 when a score differs.
"""
from __future__ import annotations

import argparse
import glob
import json
import logging
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.vs_vllm import Server
from engine.model_info import resolve_model_dir

BENCH = "lm_eval_check"
ROOT = Path(__file__).resolve().parent.parent
EVAL_VENV = ROOT / ".venv-eval"
LM_EVAL_PIN = "lm-eval[api,hf]==0.4.13"
PINS = ["torch==2.13.0", "transformers==5.25.0"]      # the project's (pyproject / Makefile)
STAMP = EVAL_VENV / ".stamp-lm-eval-0.4.13"
TASK_DIR = Path(__file__).resolve().parent / "lm_eval_tasks"
TASKS = ("tandem_story_mc", "tandem_story_gen")
MODES = {"default": "tandem-default-admission", "colocated": "tandem-colocated"}
LOGLIK_ATOL = 1e-4
OFFLINE = {"HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}

log = logging.getLogger(BENCH)


def emit(**fields) -> None:
    print(json.dumps({"bench": BENCH, **fields}), flush=True)


def ensure_eval_venv() -> Path:
    """lm-eval in .venv-eval, installed once; its ``lm_eval`` executable."""
    exe = EVAL_VENV / "bin" / "lm_eval"
    if STAMP.exists() and exe.exists():
        return exe
    log.info("installing %s into %s (minutes, ~1.5 GB)", LM_EVAL_PIN, EVAL_VENV)
    if not (EVAL_VENV / "bin" / "python").exists():
        subprocess.run([sys.executable, "-m", "venv", str(EVAL_VENV)], check=True)
    pip = [str(EVAL_VENV / "bin" / "python"), "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "install", *PINS], check=True)      # the CPU torch first
    subprocess.run([*pip, "install", LM_EVAL_PIN, *PINS], check=True)
    STAMP.write_text(LM_EVAL_PIN + "\n")
    return exe


def task_dir(tmp: Path) -> Path:
    """The task YAMLs with their data files' absolute paths."""
    for src in TASK_DIR.iterdir():
        text = src.read_text()
        (tmp / src.name).write_text(text.replace("DATA_DIR", str(TASK_DIR)) if src.suffix == ".yaml" else text)
    return tmp


def run_lm_eval(exe: Path, model: str, model_args: str, tasks: Path, out: Path) -> None:
    cmd = [str(exe), "--model", model, "--model_args", model_args, "--tasks", ",".join(TASKS),
           "--include_path", str(tasks), "--batch_size", "1", "--output_path", str(out), "--log_samples"]
    if model == "hf":
        cmd += ["--device", "cpu"]
    log.info("lm_eval --model %s", model)
    with open(out.with_suffix(".log"), "w") as fh:
        rc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, cwd=tasks,
                            env={**os.environ, **OFFLINE}, timeout=1800).returncode
    if rc != 0:
        raise RuntimeError(f"lm_eval --model {model} exited {rc}; see {out.with_suffix('.log')}")


def read_run(out: Path) -> tuple[dict, dict[str, list[dict]]]:
    """(task -> metric -> value, task -> samples by doc id)."""
    results = json.loads(Path(glob.glob(f"{out}/**/results_*.json", recursive=True)[0]).read_text())
    scores = {t: {k.split(",")[0]: v for k, v in results["results"][t].items()
                  if not k.startswith("alias") and "stderr" not in k} for t in TASKS}
    samples = {}
    for t in TASKS:
        path = glob.glob(f"{out}/**/samples_{t}_*.jsonl", recursive=True)[0]
        samples[t] = sorted((json.loads(line) for line in open(path)), key=lambda s: s["doc_id"])
    return scores, samples


def compare(mode: str, hf: tuple[dict, dict], served: tuple[dict, dict]) -> bool:
    ok = True
    for t in TASKS:
        a, b = hf[1][t], served[1][t]
        fields: dict = {"task": t, "mode": mode, "samples": len(b), "hf": hf[0][t], "tandem": served[0][t],
                        "scores_equal": hf[0][t] == served[0][t]}
        if t.endswith("_mc"):
            pairs = [(ra[0], rb[0]) for x, y in zip(a, b) for ra, rb in zip(x["resps"], y["resps"])]
            fields["worst_loglik_diff"] = max(abs(float(p[0]) - float(q[0])) for p, q in pairs)
            fields["greedy_flags_equal"] = all(p[1] == q[1] for p, q in pairs)
            fields["loglik_within_atol"] = fields["worst_loglik_diff"] <= LOGLIK_ATOL
        else:
            fields["generations_equal"] = all(x["resps"][0][0].lstrip() == y["resps"][0][0].lstrip()
                                               for x, y in zip(a, b))
        ok &= all(v for k, v in fields.items() if isinstance(v, bool))
        emit(figure="task", **fields)
    return ok


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--modes", default="default,colocated", help=f"comma list of {', '.join(MODES)}")
    ap.add_argument("--out", type=Path, default=None, help="run folder (default: a temporary one)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s",
                        stream=sys.stderr)
    modes = [m for m in args.modes.split(",") if m]
    unknown = set(modes) - set(MODES)
    if unknown:
        ap.error(f"unknown modes {sorted(unknown)}; known: {', '.join(MODES)}")
    exe = ensure_eval_venv()
    model_dir = resolve_model_dir("stories260K")
    out = args.out or Path(tempfile.mkdtemp(prefix="tandem-lm-eval-"))
    out.mkdir(parents=True, exist_ok=True)
    tasks = task_dir(Path(tempfile.mkdtemp(prefix="tandem-lm-eval-tasks-")))
    emit(figure="setup", lm_eval=LM_EVAL_PIN, model=str(model_dir), tasks=list(TASKS), modes=modes,
         out=str(out))
    run_lm_eval(exe, "hf", f"pretrained={model_dir},dtype=float32,add_bos_token=True", tasks, out / "hf")
    hf = read_run(out / "hf")
    ok = True
    for mode in modes:
        server = Server(MODES[mode], model_dir, Path(), out, mode)
        try:
            server.wait_ready(600)
            run_lm_eval(exe, "local-completions",
                        f"model={server.model_id},base_url={server.base_url}/v1/completions,"
                        f"tokenizer_backend=huggingface,tokenizer={model_dir},add_bos_token=True,"
                        "num_concurrent=1,max_retries=1", tasks, out / f"tandem-{mode}")
        finally:
            server.stop()
        ok &= compare(mode, hf, read_run(out / f"tandem-{mode}"))
    emit(figure="summary", modes=modes, all_equal=ok)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
