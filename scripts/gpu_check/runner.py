"""Runs the GPU check's steps: each under ``timeout`` and inside one overall budget, logging to a file per step.

Standard library only, so that it runs under whatever Python is found, even one without torch. The report is
rewritten after every step, so a check cut short still leaves what it found.
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from gpu_check import report, wheels
from gpu_check.plan import (
    REPO,
    Options,
    Step,
    build_plan,
    format_plan,
    missing_modules,
    parse_args,
    without_unbuilt_peer,
)

MIN_STEP_SECONDS = 10.0
"""A step is not started with less of the budget left than this."""
GRACE_SECONDS = 10
"""After its time box, a step gets SIGTERM, then SIGKILL this much later."""


def package_index_unreachable() -> Optional[str]:
    """Why ``scripts/install.sh`` cannot download anything (None when the package index answers): the GPU machines
    lent here have no network, and apt / pip would spend minutes of the budget finding that out."""
    index = (os.environ.get("PIP_INDEX_URL") or "https://pypi.org/simple").rstrip("/")
    try:
        with urllib.request.urlopen(urllib.request.Request(f"{index}/pip/", method="HEAD"), timeout=8):
            return None
    except (OSError, ValueError) as err:  # URLError, HTTPError and timeouts are OSErrors
        return f"no network: {index} does not answer ({getattr(err, 'reason', err)})"


class Runner:
    """Runs steps against one deadline and keeps what is needed for the report."""

    venv = REPO / ".venv" / "bin" / "python"
    """The Python that ``scripts/install.sh`` makes, used when it can import torch."""

    def __init__(self, options: Options) -> None:
        self.options = options
        self.started = time.monotonic()
        self.deadline = self.started + options.budget
        self.logs_dir = options.work / "logs"
        self.logs: Dict[str, Path] = {}
        self.steps: List[Step] = []
        self.meta: Dict[str, Any] = {
            "mode": "cpu-dry-run" if options.dry_run else "gpu",
            "started": datetime.datetime.now().isoformat(timespec="seconds"),
            "budget_seconds": options.budget,
            "out": str(options.out),
            "work": str(options.work),
        }
        self.running: Dict[str, Tuple[Step, subprocess.Popen, float, float]] = {}
        self.ended: Dict[str, float] = {}
        """When each started step's process ended (a thread per process notes it, for background steps)."""

    # --- one step ---------------------------------------------------------------------------------------------------
    def _env(self, step: Step) -> Dict[str, str]:
        env = dict(os.environ)
        paths = [str(REPO), str(REPO / "scripts"), str(self.options.site)]
        paths += [env["PYTHONPATH"]] if env.get("PYTHONPATH") else []
        env.update(PYTHONPATH=os.pathsep.join(paths), PYTHONUNBUFFERED="1", **step.env)
        return env

    def start(self, step: Step) -> bool:
        """Start ``step`` (False, with the step marked skipped, when the budget is spent)."""
        left = self.deadline - time.monotonic()
        if left < MIN_STEP_SECONDS:
            step.status, step.skip = "skipped", f"the {self.options.budget:.0f} s budget was spent"
            return False
        step.timeout = min(step.timeout, left - 2)
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        log = self.logs[step.name] = self.logs_dir / f"{step.name}.log"
        if step.result is not None and step.result.exists():
            step.result.unlink()  # never report an earlier run's file
        argv = step.argv
        if shutil.which("timeout"):
            argv = ["timeout", "-k", str(GRACE_SECONDS), f"{step.timeout:.0f}", *argv]
        with open(log, "w") as handle:
            handle.write(f"$ {step.command()}\n")
            handle.flush()
            try:
                proc = subprocess.Popen(argv, cwd=REPO, env=self._env(step), stdout=handle, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
            except OSError as err:
                step.status, step.returncode, step.seconds = "failed", None, 0.0
                step.summary = f"could not start: {err}"
                return False
        step.status = "running"
        self.running[step.name] = (step, proc, time.monotonic(), step.timeout)

        def note_end() -> None:
            proc.wait()
            self.ended[step.name] = time.monotonic()

        threading.Thread(target=note_end, daemon=True).start()
        return True

    def finish(self, name: str) -> None:
        """Wait for the running step ``name`` (killing it past its time box) and judge it."""
        step, proc, t0, box = self.running.pop(name)
        timed_out = False
        try:
            proc.wait(timeout=max(box - (time.monotonic() - t0), 0) + 2 * GRACE_SECONDS)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            timed_out = True
        time.sleep(0.05)  # let the watching thread note the end
        step.seconds = self.ended.get(name, time.monotonic()) - t0
        step.returncode = proc.returncode
        timed_out = timed_out or (proc.returncode in (124, 137, -9) and step.seconds >= box - 1)
        report.judge(step, self.logs[name].read_text(errors="replace"), timed_out, self.options.dry_run)
        self.write()

    def run(self, step: Step) -> None:
        """Run ``step`` to its end (or start it, when it runs in the background)."""
        for name in step.after:
            if name in self.running:
                self.finish(name)
        if step.name == "bench_train":
            without_unbuilt_peer(step, self.steps)
        failed = [s.name for s in self.steps if s.name in step.requires and s.status != "ok"]
        if step.skip is None and failed:
            step.skip = f"needs {', '.join(failed)}, which did not succeed"
        if step.skip is not None:
            step.status = "skipped"
        elif self.start(step) and not step.background:
            self.finish(step.name)
        self.write()

    # --- the Python -------------------------------------------------------------------------------------------------
    def probe(self, python: str, name: str = "environment") -> Dict[str, Any]:
        """Run the ``environment`` probe with ``python``; what it found ({} when it could not run)."""
        out = self.options.work / f"{name}.json"
        step = Step(name, f"environment of {python}", [python, "-m", "gpu_check.probe", "environment", "--json",
                    str(out)], 60, result=out)  # fmt: skip
        self.steps.append(step)
        self.run(step)
        if step.status != "ok":
            return {}
        env = step.data
        gpu = f"{env.get('gpu')} sm_{''.join(map(str, env.get('capability', [])))}" if env.get("gpu") else "no GPU"
        lacks = missing_modules(env, ["torch", "pytest", "nerfstudio", "nerfacc", "diffusers", "transformers"])
        step.summary = f"torch {env.get('torch')}, {gpu}" + (f"; lacks {', '.join(lacks)}" if lacks else "")
        return env

    def choose_python(self) -> Tuple[str, Dict[str, Any]]:
        """The Python the steps use, and its probe: --python, else .venv (installed if absent), else python3; the
        wheels it lacks are installed first (:meth:`install_wheels`)."""
        opts, venv = self.options, str(self.venv)
        shutil.rmtree(opts.site, ignore_errors=True)  # this run's wheels and entry points only
        opts.site.mkdir(parents=True)
        install = Step("install", "install .venv (scripts/install.sh)", ["bash", "scripts/install.sh"], 420,
                       {"PIP_RETRIES": "0", "PIP_TIMEOUT": "15"})  # fmt: skip
        self.steps.append(install)
        folder, wheel_files = self.wheel_files()
        if opts.python:
            install.skip = f"--python {opts.python}"
        elif self.venv.is_file():
            install.skip = ".venv exists"
        elif wheel_files:
            install.skip = f"no .venv; the system Python with the wheels of {folder}, offline"
        elif not opts.install:
            install.skip = "no .venv, and --no-install"
        else:
            install.skip = package_index_unreachable()
        # not a gap: without a .venv the system Python runs the steps, and those it cannot run say what it lacks
        install.expected_skip = install.skip is not None
        self.run(install)
        python, env = opts.python, None
        self.meta["python_choice"] = f"{python} (--python)"
        if python is None and self.venv.is_file():
            env = self.probe(venv)
            if env.get("modules", {}).get("torch"):
                how = "installed now by scripts/install.sh" if install.status == "ok" else "existing"
                python, self.meta["python_choice"] = venv, f".venv/bin/python ({how})"
            else:
                first = self.steps[-1]  # kept in the report under another name; the system Python is probed next
                first.name, first.status = "environment_venv", "failed"
                first.summary = f"{venv} cannot import torch ({first.summary})"
                if "environment" in self.logs:
                    self.logs["environment_venv"] = self.logs.pop("environment").rename(self.logs_dir / "venv.log")
        if python is None:
            python = shutil.which("python3") or sys.executable
            why = "no .venv" if not self.venv.is_file() else ".venv/bin/python cannot import torch"
            self.meta["python_choice"] = f"the system's {python} ({why}; install: {report.status_text(install)})"
        if self.install_wheels(python) or env is None or python != venv:
            self.steps = [s for s in self.steps if s.name != "environment"]  # the .venv's, before its wheels
            env = self.probe(python)
        return python, dict(env, python=python) if env else env

    def wheel_files(self) -> Tuple[Path, List[Path]]:
        """The folder of wheels to install (``--wheels``, else ``.whl``) and the wheels in it."""
        folder = self.options.wheels or REPO / ".whl"
        return folder, sorted(folder.glob("*.whl")) if folder.is_dir() else []

    def install_wheels(self, python: str) -> bool:
        """Install the wheels of ``--wheels`` (default ``.whl``, for a Python other than the ``.venv``) into the site
        folder, offline; True when they were installed."""
        folder, files = self.wheel_files()
        pip = [python, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile"]
        pip += ["--disable-pip-version-check", "--target", str(self.options.site), *map(str, files)]
        step = Step("wheels", f"install {len(files)} wheels from {folder} (pip, offline)", pip, 120)
        if not files:
            step.skip, step.expected_skip = f"no wheels in {folder}", True
        elif self.options.wheels is None and python == str(self.venv):
            step.skip, step.expected_skip = ".venv holds the locked set (pass --wheels to add these)", True
        self.steps.append(step)
        self.run(step)
        if step.status == "ok":
            step.summary = f"{len(files)} wheels in {self.options.site}"
        return step.status == "ok"

    def write(self) -> None:
        self.meta["wall_seconds"] = time.monotonic() - self.started
        env = next((s.data for s in self.steps if s.name == "environment" and s.status == "ok"), {})
        self.meta["environment"] = env
        report.write_report(self.options.out, self.meta, self.steps, self.logs)

    def stop(self, signum: int, _frame: Any) -> None:
        """On SIGTERM / SIGINT: kill the running steps, write the report, exit."""
        for step, proc, _, _ in self.running.values():
            os.killpg(proc.pid, signal.SIGKILL)
            step.status, step.summary = "failed", f"the check itself was stopped (signal {signum})"
        self.write()
        sys.exit(128 + signum)


def main(argv: Optional[List[str]] = None) -> int:
    options = parse_args(argv)
    if options.fetch_wheels:
        return wheels.fetch(options.fetch_wheels)
    runner = Runner(options)
    if options.plan_only:
        python = options.python or sys.executable
        probe = subprocess.run([python, "-m", "gpu_check.probe", "environment"], capture_output=True, text=True,
                               cwd=REPO, env=runner._env(Step("plan", "plan")))  # fmt: skip
        env = dict(json.loads(probe.stdout) if probe.returncode == 0 else {}, python=python)
        print(format_plan(options, env, build_plan(options, env)))
        return 0
    signal.signal(signal.SIGTERM, runner.stop)
    signal.signal(signal.SIGINT, runner.stop)
    python, env = runner.choose_python()
    for step in build_plan(options, env or {"python": python}):
        if not env:
            step.skip, step.expected_skip = "the environment probe failed", False
        runner.steps.append(step)
        runner.run(step)
    for name in list(runner.running):
        runner.finish(name)
    runner.write()
    code = report.exit_code(runner.steps)
    print(f"gpu_check: {'PASS' if code == 0 else 'FAIL'}; report: {options.out / 'gpu_check.md'}")
    print((options.out / "gpu_check.md").read_text())
    return code
