"""The GPU check's verdict on each step and its report: ``gpu_check.json``, ``gpu_check.md`` and ``gpu_check.log``.

Nothing is filled in: a step that did not run says ``skipped (reason)``, one that failed says how (its exit code and
the last error line of its log), and the speed tables hold only what the benchmarks wrote.
"""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from gpu_check.plan import Step

LOG_TAIL_LINES = 120
"""Lines of each step's log copied into gpu_check.log."""


# --- reading what a step wrote -------------------------------------------------------------------------------------
def junit_counts(path: Path) -> Dict[str, Any]:
    """Counts of a pytest JUnit XML report, the failing test ids, and how many CUDA cases passed."""
    root = ET.parse(path).getroot()
    cases = list(root.iter("testcase"))
    failed: List[str] = []
    skipped = passed = cuda_passed = 0
    for case in cases:
        ident = f"{case.get('classname', '')}::{case.get('name', '')}"
        if case.find("failure") is not None or case.find("error") is not None:
            failed.append(ident)
        elif case.find("skipped") is not None:
            skipped += 1
        else:
            passed += 1
            cuda_passed += "cuda" in re.split(r"[\[\]\-]", case.get("name", ""))[1:]  # a [cuda-...] case
    return {"tests": len(cases), "passed": passed, "failed": len(failed), "skipped": skipped,
            "cuda_passed": cuda_passed, "failures": failed}  # fmt: skip


def load_result(step: Step) -> None:
    """Read the file the step wrote (JUnit XML or JSON) into ``step.data``, if it exists."""
    if step.result is None or not step.result.is_file():
        return
    try:
        step.data = junit_counts(step.result) if step.result.suffix == ".xml" else json.loads(step.result.read_text())
    except (ET.ParseError, json.JSONDecodeError, OSError) as err:
        step.data = {"unreadable": f"{step.result}: {err}"}


def last_error_line(log: str) -> str:
    """The line of a log that best says why a command failed: the last one naming an error, else the last one."""
    lines = [ln.strip() for ln in log.splitlines() if ln.strip() and not ln.strip().startswith("^")]
    for line in reversed(lines):
        if "Error" in line or "error:" in line or line.startswith(("FAILED", "ERROR", "gpu_check:")):
            return line[:240]
    return lines[-1][:240] if lines else "(no output)"


def judge(step: Step, log: str, timed_out: bool, dry_run: bool) -> None:
    """Set ``step.status`` and ``step.summary`` from its exit code, its log and what it wrote."""
    load_result(step)
    data = step.data
    if timed_out:
        step.status, step.summary = "timeout", f"killed after its {step.timeout:.0f} s time box: {last_error_line(log)}"
        return
    problem: Optional[str] = None
    if step.returncode != 0:
        problem = f"exit {step.returncode}: {last_error_line(log)}"
    elif "unreadable" in data:
        problem = data["unreadable"]
    elif step.result is not None and not data:
        problem = f"it wrote no {step.result.name}"
    elif step.name == "ops_tests" and not dry_run and not data.get("cuda_passed"):
        problem = "no CUDA test case passed (were the CUDA kernels built?)"
    if step.name.endswith("_tests") and data.get("failed"):
        shown = ", ".join(data["failures"][:5]) + (" ..." if data["failed"] > 5 else "")
        problem = f"{data['failed']} failed: {shown}"
    step.status = "failed" if problem else "ok"
    step.summary = problem or summary(step)


def summary(step: Step) -> str:
    """One line saying what a successful step found."""
    d = step.data
    if step.name.endswith("_tests"):
        cuda = f" ({d['cuda_passed']} CUDA cases passed)" if d.get("cuda_passed") else ""
        return f"{d['passed']} passed, {d['failed']} failed, {d['skipped']} skipped{cuda}"
    if step.name == "build":
        return f"relight3d/_C built in place for TORCH_CUDA_ARCH_LIST={step.env.get('TORCH_CUDA_ARCH_LIST')}"
    if step.name == "metadata":
        return "relight3d's entry points, as an egg-info on the steps' path"
    if step.name == "scene":
        return f"{d['resolution']} px, {d['n_train']} + {d['n_test']} views, in {d['seconds']:.1f} s"
    if step.name == "nerfacc":
        return f"kernels loaded in {d['seconds']:.1f} s (compiling included): {d.get('module')}"
    if step.name == "backend":
        return f"CPU ops: {d.get('cpu')}, CUDA ops: {d.get('cuda') or 'no GPU'} ({len(d.get('kernels', []))} kernels)"
    if step.name == "bench_train":
        rows = d.get("results", {})
        return "; ".join(f"{m}: {r['rays_per_second'] / 1e3:.1f} K rays/s, {r['psnr_masked']:.2f} dB in mask"
                         for m, r in rows.items()) or "no method ran"  # fmt: skip
    if step.name == "prior_speed":
        rows = d.get("results", {})
        return "; ".join(f"{p}: {r['seconds_per_view']:.3g} s/view" for p, r in rows.items()) or "no prior ran"
    return "done"


def exit_code(steps: Sequence[Step]) -> int:
    """0 when every step succeeded or was skipped by design, else 1."""
    return int(any(s.status in ("failed", "timeout") or (s.status == "skipped" and not s.expected_skip)
                   or s.status in ("pending", "running") for s in steps))  # fmt: skip


# --- writing -------------------------------------------------------------------------------------------------------
def status_text(step: Step) -> str:
    if step.status == "skipped":
        return f"skipped ({step.skip})"
    return step.status


def report_json(meta: Dict[str, Any], steps: Sequence[Step]) -> Dict[str, Any]:
    """Everything the check found, as one JSON document."""
    fields = ("name", "title", "status", "skip", "expected_skip", "seconds", "returncode", "summary", "notes")
    out_steps = []
    for s in steps:
        entry = {f: getattr(s, f) for f in fields}
        entry.update(command=s.command() if s.argv else None, timeout=s.timeout, env=s.env, data=s.data)
        out_steps.append(entry)
    return {**meta, "passed": exit_code(steps) == 0, "steps": out_steps}


def _f(value: Optional[float], fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def training_table(step: Step) -> List[str]:
    d = step.data
    rows = d.get("results", {})
    peer = rows.get(d.get("peer", ""))
    lines = [f"## Training speed ({d.get('seconds', '?')} s per method, {d.get('device', '?')}, same run)", "",
             f"Scene: `{d.get('data', '?')}`. Rays/s after {d.get('warmup', '?')} warm-up iterations; PSNR / SSIM "
             "on the held-out views (mask: alpha > 0.5).", "",
             f"| method | iterations | rays/s | x {d.get('peer', 'peer')} | PSNR | PSNR mask | SSIM |",
             "|---|---|---|---|---|---|---|"]  # fmt: skip
    for name, r in rows.items():
        ratio = r["rays_per_second"] / peer["rays_per_second"] if peer else None
        lines.append(f"| {name} | {r['iterations']} | {r['rays_per_second']:.0f} | {_f(ratio, '.2f')} | "
                     f"{r['psnr']:.2f} | {r['psnr_masked']:.2f} | {r['ssim']:.3f} |")  # fmt: skip
    lines += [f"- {n}" for n in step.notes]
    lines += [f"- {m}: failed ({e})" for m, e in d.get("errors", {}).items()]
    return lines + [""]


def prior_table(step: Step) -> List[str]:
    d = step.data
    size = "tiny random models" if d.get("tiny") else "released sizes, random weights"
    lines = [f"## Stage-1 relighting pass per prior ({size}, {d.get('device', '?')})", "",
             f"{d.get('views', '?')} view(s) per call, after one warm-up call. UNet calls: counted during the pass.",
             "", "| prior | resolution | steps (config) | UNet calls | dtype | s per view | views/s | build s "
             "| peak GiB |", "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for name, r in d.get("results", {}).items():
        lines.append(f"| {name} | {r.get('resolution', '-')} | {r.get('num_inference_steps', '-')} | "
                     f"{r.get('unet_calls', '-')} | {r.get('dtype', '-')} | {r['seconds_per_view']:.3g} | "
                     f"{1 / r['seconds_per_view']:.3g} | {_f(r.get('build_seconds'), '.1f')} | "
                     f"{_f(r.get('peak_gpu_gib'), '.1f')} |")  # fmt: skip
    lines += [f"- {p}: failed ({e})" for p, e in d.get("errors", {}).items()]
    return lines + [""]


def report_markdown(meta: Dict[str, Any], steps: Sequence[Step]) -> str:
    """The check as Markdown: what ran where, one row per step, then the speed tables."""
    env = meta.get("environment", {})
    gpu = env.get("gpu")
    where = (f"{gpu} (sm_{''.join(map(str, env.get('capability', [])))}, {env.get('gpu_memory_gib')} GiB, driver "
             f"{env.get('driver')})" if gpu else "no GPU")  # fmt: skip
    verdict = "PASS" if exit_code(steps) == 0 else "FAIL"
    lines = [
        f"# relight3d GPU check: {verdict}", "",
        f"- mode: {meta['mode']}; {where}; {env.get('cpu_count')} CPU cores",
        f"- torch {env.get('torch')} (CUDA {env.get('torch_cuda')}), nvcc: {env.get('nvcc') or 'none'}, "
        f"Python {env.get('python_version')} at `{env.get('python')}`",
        f"- Python chosen: {meta.get('python_choice', '?')}",
        f"- commit {env.get('commit') or 'unknown'}; started {meta.get('started')}; "
        f"{_f(meta.get('wall_seconds'), '.0f')} s of a {meta['budget_seconds']:.0f} s budget", "",
        "| step | status | seconds | result |", "|---|---|---|---|",
    ]  # fmt: skip
    for s in steps:
        result = s.summary.replace("|", "/") if s.status != "skipped" else "-"
        lines.append(f"| {s.title} | {status_text(s)} | {_f(s.seconds, '.1f')} | {result} |")
    lines.append("")
    for s in steps:
        if s.name == "bench_train" and s.data.get("results"):
            lines += training_table(s)
        elif s.name == "bench_train":
            lines += [f"Training speed: {status_text(s)}", *(f"- {n}" for n in s.notes), ""]
        if s.name == "prior_speed" and s.data.get("results"):
            lines += prior_table(s)
    return "\n".join(lines)


def write_report(out: Path, meta: Dict[str, Any], steps: Sequence[Step], logs: Dict[str, Path]) -> None:
    """Write gpu_check.json, gpu_check.md and gpu_check.log (each step's command and log tail) into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_check.json").write_text(json.dumps(report_json(meta, steps), indent=1, default=str) + "\n")
    (out / "gpu_check.md").write_text(report_markdown(meta, steps) + "\n")
    parts = []
    for s in steps:
        log = logs.get(s.name)
        tail = log.read_text(errors="replace").splitlines()[-LOG_TAIL_LINES:] if log and log.is_file() else []
        parts.append(f"===== {s.name}: {status_text(s)} ({_f(s.seconds, '.1f')} s)\n$ {s.command()}\n"
                     + "\n".join(tail))  # fmt: skip
    (out / "gpu_check.log").write_text("\n\n".join(parts) + "\n")
