"""scripts/gpu_check.sh's cheap parts: its arguments, the plan of each mode, the verdicts, the JSON / Markdown report,
the time boxes and budget, and the carried wheels. The dry run itself (``bash scripts/gpu_check.sh --cpu-dry-run``,
minutes) is not run here."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import zipfile
from pathlib import Path
from typing import Any, Dict

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))

from gpu_check import plan, report, runner, wheels  # noqa: E402
from gpu_check.plan import Step  # noqa: E402

ALL_MODULES = {m: "1.0" for m in ("torch", "setuptools", "pytest", "PIL", "nerfstudio", "nerfacc", "diffusers",
                                  "transformers", "tyro", "relight3d")}  # fmt: skip
CPU_ENV: Dict[str, Any] = {"python": "/py", "cpu_count": 2, "cuda_available": False, "modules": ALL_MODULES}
H100_ENV: Dict[str, Any] = {"python": "/py", "cpu_count": 16, "cuda_available": True, "capability": [9, 0],
                            "gpu": "NVIDIA H100 80GB HBM3", "cuda_home": "/usr/local/cuda",
                            "nvcc": "Build cuda_13.0", "modules": ALL_MODULES}  # fmt: skip


def by_name(steps):
    return {s.name: s for s in steps}


def arg(argv, flag, n=1):
    i = argv.index(flag)
    return argv[i + 1] if n == 1 else argv[i + 1 : i + 1 + n]


def test_arguments_defaults_and_one_line_errors(capsys):
    opts = plan.parse_args([], environ={})
    assert (opts.dry_run, opts.budget, opts.train_seconds, opts.wheels) == (False, 450.0, 10.0, None)
    assert opts.out == REPO / "renders" / "gpu_check" and opts.site == REPO / "renders" / "gpu_check" / "work" / "site"
    assert plan.parse_args([], environ={"OUT": "/tmp/device_out"}).out == Path("/tmp/device_out")
    dry = plan.parse_args(["--cpu-dry-run", "--only", "bench_train", "--no-install"], environ={})
    assert (dry.dry_run, dry.budget, dry.train_seconds, dry.only, dry.install) == (True, 280.0, 3.0, ("bench_train",),
                                                                                   False)  # fmt: skip
    assert plan.parse_args(["--fetch-wheels"], environ={}).fetch_wheels == REPO / ".whl"
    for bad, says in ((["--budget", "0"], "must be positive"), (["--only", "everything"], "invalid choice"),
                      (["--train-seconds", "-1"], "must be positive"), (["--wheels", "/no/such"], "not a folder"),
                      (["--bogus"], "unrecognized arguments: --bogus")):  # fmt: skip
        with pytest.raises(SystemExit) as exit_info:
            plan.parse_args(bad, environ={})
        err = capsys.readouterr().err
        assert exit_info.value.code == 2 and err.count("\n") == 1 and says in err, err
        assert err.startswith("scripts/gpu_check.sh: ")


def test_dry_run_plan_skips_the_cuda_parts_and_runs_the_rest_tiny_on_one_thread():
    steps = plan.build_plan(plan.parse_args(["--cpu-dry-run"], environ={}), CPU_ENV)
    assert [s.name for s in steps] == list(plan.PLANNED)
    skipped = {s.name: s.skip for s in steps if s.skip}
    assert skipped == {"metadata": "relight3d is installed: its entry points are known",
                       "nerfacc": "--cpu-dry-run: CUDA only", "build": "--cpu-dry-run: CUDA only"}  # fmt: skip
    assert all(s.expected_skip for s in steps if s.skip)
    s = by_name(steps)
    assert all(step.env["OMP_NUM_THREADS"] == "1" for step in steps)
    assert s["prior_tests"].env["RELIGHT3D_TEST_DEVICE"] == "cpu"
    assert s["prior_tests"].argv[-4:-2] == list(plan.DRY_PRIOR_TESTS)
    assert arg(s["ops_tests"].argv, "tests/ops", 2) == ["-k", "cuda"]  # collected; the CUDA cases must skip
    assert "--require" not in s["backend"].argv
    bench = s["bench_train"].argv
    assert bench[bench.index("--methods") + 1 : bench.index("--peer")] == ["relight3d-tensorf", "relight3d-ngp"]
    assert (arg(bench, "--device"), arg(bench, "--seconds"), arg(bench, "--warmup")) == ("cpu", "3", "2")
    assert s["bench_train"].requires == ("scene",) and s["bench_train"].notes[0].startswith("instant-ngp: skipped (")
    assert s["prior_speed"].argv[-1] == "--tiny" and arg(s["prior_speed"].argv, "--device") == "cpu"
    assert s["scene"].background and arg(s["scene"].argv, "--resolution") == "24"


def test_gpu_plan_builds_for_the_gpu_found_and_times_instant_ngp():
    steps = by_name(plan.build_plan(plan.parse_args([], environ={}), H100_ENV))
    assert [s.name for s in steps.values() if s.skip] == ["metadata"]  # relight3d installed
    build = steps["build"]
    assert build.argv == ["/py", "setup.py", "build_ext", "--inplace", "--force"]
    cuda_env = {k: build.env[k] for k in ("TORCH_CUDA_ARCH_LIST", "MAX_JOBS", "CUDA_HOME")}
    assert cuda_env == {"TORCH_CUDA_ARCH_LIST": "9.0", "MAX_JOBS": "16", "CUDA_HOME": "/usr/local/cuda"}
    assert build.env["PATH"].startswith("/usr/local/cuda/bin:")
    assert steps["backend"].argv[-2:] == ["--require", "cuda"]
    assert steps["ops_tests"].argv[8:10] == ["tests/ops", "--junitxml"]  # every kernel test, the hash grid's too
    assert steps["nerfacc"].background and steps["nerfacc"].env["MAX_JOBS"] == "8"
    bench = steps["bench_train"]
    assert bench.argv[bench.argv.index("--methods") + 1 : bench.argv.index("--peer") + 2] == [
        "relight3d-tensorf", "relight3d-ngp", "instant-ngp", "--peer", "instant-ngp"]  # fmt: skip
    assert [arg(bench.argv, f) for f in ("--device", "--seconds", "--warmup")] == ["cuda", "10", "10"]
    assert bench.after == ("scene", "nerfacc") and bench.requires == ("scene",)
    # nerfacc's JIT loader finds nvcc and the architecture it was built for; nvcc force-includes the CCCL 3 alias
    assert bench.env == dict(build.env, NVCC_APPEND_FLAGS=f"-include {plan.NERFACC_COMPAT}")
    assert steps["nerfacc"].env["NVCC_APPEND_FLAGS"] == bench.env["NVCC_APPEND_FLAGS"]
    assert "NVCC_APPEND_FLAGS" not in build.env and plan.NERFACC_COMPAT.is_file()
    assert steps["prior_tests"].env == {"RELIGHT3D_TEST_DEVICE": "cuda"}
    assert steps["prior_tests"].argv[8] == "tests/priors"
    assert "--tiny" not in steps["prior_speed"].argv and steps["scene"].env == {"OMP_NUM_THREADS": "1"}
    assert "CPLUS_INCLUDE_PATH" not in build.env
    wheel_headers = dict(H100_ENV, cuda_library_headers=["/venv/nvidia/cu13/include"])  # no cuBLAS in the toolkit
    for step in plan.build_plan(plan.parse_args([], environ={}), wheel_headers):
        if step.name in ("build", "nerfacc", "bench_train"):
            assert step.env["CPLUS_INCLUDE_PATH"].split(":")[-1] == "/venv/nvidia/cu13/include"  # searched last


def test_a_python_without_relight3ds_metadata_gets_its_entry_points_first():
    """A lent machine's Python has relight3d only on its path: nerfstudio would not know relight3d's methods."""
    env = dict(H100_ENV, modules={**ALL_MODULES, "relight3d": "present"})
    opts = plan.parse_args(["--only", "bench_train"], environ={})
    metadata = plan.build_plan(opts, env)[0]
    assert metadata.skip is None and metadata.env == {"BUILD_NO_EXT": "1"}  # nothing compiled
    assert metadata.argv == ["/py", "setup.py", "-q", "egg_info", "--egg-base", str(opts.site)]


def test_gpu_time_boxes_and_budget_fit_the_device_command():
    """The GPU check ends inside 8 minutes: the budget plus the kill grace of the step running at its end. Every
    step has a time box; the background builds fit beside the foreground steps that wait for them."""
    opts = plan.parse_args([], environ={})
    steps = plan.build_plan(opts, H100_ENV)
    assert opts.budget + runner.GRACE_SECONDS < 8 * 60
    assert plan.DRY.budget + runner.GRACE_SECONDS < 5 * 60
    assert all(0 < s.timeout <= opts.budget for s in steps)
    s = by_name(steps)
    foreground_before_bench = sum(s[n].timeout for n in ("build", "backend", "ops_tests", "prior_tests"))
    assert s["nerfacc"].timeout <= foreground_before_bench and s["scene"].timeout <= s["build"].timeout
    assert s["bench_train"].timeout == 3 * (opts.train_seconds + plan.GPU.boxes["bench_train"]) + 30


def test_missing_dependencies_and_a_missing_gpu_are_named_and_count_as_gaps():
    env = dict(H100_ENV, modules={**ALL_MODULES, "nerfstudio": None, "diffusers": None, "nerfacc": None})
    steps = by_name(plan.build_plan(plan.parse_args([], environ={}), env))
    assert steps["bench_train"].skip == "the Python has no nerfstudio"
    assert steps["prior_tests"].skip == "the Python has no diffusers, nerfstudio"
    assert steps["nerfacc"].skip == "the Python has no nerfacc"
    assert "instant-ngp" not in steps["bench_train"].argv
    assert not any(s.expected_skip for s in steps.values() if s.name != "metadata")
    assert steps["build"].skip is None and steps["ops_tests"].skip is None
    no_gpu = by_name(plan.build_plan(plan.parse_args([], environ={}), CPU_ENV))
    assert no_gpu["build"].skip.startswith("torch sees no CUDA device") and no_gpu["scene"].skip is None
    for step in no_gpu.values():
        step.status = "skipped" if step.skip else "ok"
    assert report.exit_code(list(no_gpu.values())) == 1


def test_only_runs_the_named_steps_and_what_they_need():
    steps = by_name(plan.build_plan(plan.parse_args(["--only", "bench_train"], environ={}), H100_ENV))
    assert [n for n, s in steps.items() if not s.skip] == ["nerfacc", "scene", "bench_train"]
    assert steps["build"].skip == "not in --only" and steps["build"].expected_skip


def test_instant_ngp_is_left_out_of_the_timing_when_nerfaccs_kernels_did_not_build():
    steps = by_name(plan.build_plan(plan.parse_args([], environ={}), H100_ENV))
    bench, nerfacc = steps["bench_train"], steps["nerfacc"]
    nerfacc.status = "ok"
    plan.without_unbuilt_peer(bench, [nerfacc])
    assert "instant-ngp" in bench.argv
    nerfacc.status, nerfacc.summary = "timeout", "killed after its 330 s time box: ..."
    plan.without_unbuilt_peer(bench, [nerfacc])
    methods = bench.argv[bench.argv.index("--methods") + 1 : bench.argv.index("--output")]
    assert methods == ["relight3d-tensorf", "relight3d-ngp", "--peer", "relight3d-tensorf", "--device", "cuda",
                       "--warmup", "10"]  # fmt: skip
    assert bench.notes == ["instant-ngp: skipped (nerfacc's kernels did not build: timeout: killed after its 330 s "
                           "time box: ...)"]  # fmt: skip


def test_plan_text_names_each_step_and_why_it_is_skipped():
    opts = plan.parse_args(["--cpu-dry-run"], environ={})
    text = plan.format_plan(opts, CPU_ENV, plan.build_plan(opts, CPU_ENV))
    assert text.startswith("GPU check plan: cpu-dry-run mode, budget 280 s, report in ")
    assert "  build        skipped: --cpu-dry-run: CUDA only" in text
    assert (
        "  scene        time box 60 s, in the background\n      OMP_NUM_THREADS=1 /py -m gpu_check.probe scene" in text
    )


JUNIT = """<?xml version="1.0"?><testsuites><testsuite name="pytest" tests="6">
<testcase classname="tests.ops.test_kernels" name="test_march[cuda-4]" time="0.1"/>
<testcase classname="tests.ops.test_kernels" name="test_march[cpu-4]" time="0.1"/>
<testcase classname="tests.ops.test_kernels" name="test_vjp[cuda-8]" time="0.1"><failure message="x"/></testcase>
<testcase classname="tests.ops.test_kernels" name="test_render[cuda]" time="0.1"><skipped message="y"/></testcase>
<testcase classname="tests.ops.test_vm" name="test_vm[8-cuda]" time="0.1"/>
<testcase classname="tests.ops.test_hash" name="test_layout_is_tinycudanns" time="0.1"/>
</testsuite></testsuites>"""


def test_junit_counts_and_verdicts(tmp_path: Path):
    xml = tmp_path / "ops.xml"
    xml.write_text(JUNIT)
    assert report.junit_counts(xml) == {"tests": 6, "passed": 4, "failed": 1, "skipped": 1, "cuda_passed": 2,
                                        "failures": ["tests.ops.test_kernels::test_vjp[cuda-8]"]}  # fmt: skip
    step = Step("ops_tests", "kernel tests", ["pytest"], result=xml)
    step.returncode = 1
    report.judge(step, "...\nFAILED tests/ops/test_kernels.py::test_vjp[cuda-8]\n", False, dry_run=False)
    assert (step.status, step.summary) == ("failed", "1 failed: tests.ops.test_kernels::test_vjp[cuda-8]")
    xml.write_text(JUNIT.replace('<failure message="x"/>', "").replace("cuda-", "cpu-").replace("-cuda", "-cpu"))
    step.returncode = 0
    report.judge(step, "", False, dry_run=False)  # only [cpu] cases and a name that merely contains "cuda"
    assert (step.status, step.summary) == ("failed", "no CUDA test case passed (were the CUDA kernels built?)")
    report.judge(step, "", False, dry_run=True)
    assert (step.status, step.summary) == ("ok", "5 passed, 0 failed, 1 skipped")
    step.returncode = 124
    report.judge(step, "Traceback ...\nRuntimeError: stuck\n", True, dry_run=False)
    assert step.status == "timeout" and step.summary.endswith("RuntimeError: stuck")
    missing = Step("bench_train", "t", ["x"], result=tmp_path / "none.json")
    missing.returncode = 0
    report.judge(missing, "", False, dry_run=False)
    assert (missing.status, missing.summary) == ("failed", "it wrote no none.json")


def known_steps():
    env = Step("environment", "environment", ["/py", "-m", "gpu_check.probe", "environment"], status="ok",
               seconds=5.0, summary="torch 2.11, NVIDIA H100 sm_90")  # fmt: skip
    ops = Step("ops_tests", "kernel tests", ["pytest", "tests/ops"], status="ok", seconds=12.0,
               data={"passed": 10, "failed": 0, "skipped": 2, "cuda_passed": 4})  # fmt: skip
    ops.summary = report.summary(ops)
    build = Step("build", "build the CUDA extension", ["setup.py"], status="failed", seconds=3.25, returncode=1,
                 summary="exit 1: error: identifier x is undefined")  # fmt: skip
    skipped = Step("nerfacc", "nerfacc", ["x"], skip="the Python has no nerfacc", status="skipped")
    results = {"relight3d-ngp": {"iterations": 900, "rays_per_second": 150000.0, "psnr": 30.0, "psnr_masked": 25.5,
                                 "ssim": 0.9},
               "instant-ngp": {"iterations": 1000, "rays_per_second": 300000.0, "psnr": 31.0, "psnr_masked": 26.0,
                               "ssim": 0.95}}  # fmt: skip
    bench = Step("bench_train", "training", ["bench"], status="ok", seconds=100.0, notes=["tensorf: skipped (x)"],
                 data={"device": "cuda", "seconds": 20, "warmup": 10, "data": "scene128", "peer": "instant-ngp",
                       "results": results, "errors": {"relight3d-tensorf": "RuntimeError: boom"}})  # fmt: skip
    bench.summary = report.summary(bench)
    gaffer = {"resolution": 256, "num_inference_steps": 50, "unet_calls": 50, "dtype": "float16",
              "seconds_per_view": 2.0, "build_seconds": 12.34, "peak_gpu_gib": 3.21}  # fmt: skip
    speed = Step("prior_speed", "priors", ["speed"], status="ok", seconds=60.0,
                 data={"device": "cuda", "tiny": False, "views": 1, "results": {"neural-gaffer": gaffer}})  # fmt: skip
    speed.summary = report.summary(speed)
    return [env, build, skipped, ops, bench, speed]


def test_report_json_markdown_and_log_of_known_steps(tmp_path: Path):
    steps = known_steps()
    logs = {"build": tmp_path / "build.log"}
    logs["build"].write_text("\n".join(f"line {i}" for i in range(300)))
    meta = {"mode": "gpu", "budget_seconds": 450.0, "wall_seconds": 181.4, "started": "2026-01-01T00:00:00",
            "python_choice": ".venv/bin/python (existing)",
            "environment": {"gpu": "NVIDIA H100 80GB HBM3", "capability": [9, 0], "gpu_memory_gib": 79.2,
                            "driver": "580.1", "cpu_count": 16, "torch": "2.11.0", "torch_cuda": "13.0"}}  # fmt: skip
    report.write_report(tmp_path / "out", meta, steps, logs)
    doc = json.loads((tmp_path / "out" / "gpu_check.json").read_text())
    assert doc["passed"] is False and doc["mode"] == "gpu"
    assert [(s["name"], s["status"]) for s in doc["steps"]] == [
        ("environment", "ok"), ("build", "failed"), ("nerfacc", "skipped"), ("ops_tests", "ok"),
        ("bench_train", "ok"), ("prior_speed", "ok")]  # fmt: skip
    assert doc["steps"][4]["data"]["results"]["instant-ngp"]["rays_per_second"] == 300000.0
    md = (tmp_path / "out" / "gpu_check.md").read_text().splitlines()
    assert md[0] == "# relight3d GPU check: FAIL"
    assert "- mode: gpu; NVIDIA H100 80GB HBM3 (sm_90, 79.2 GiB, driver 580.1); 16 CPU cores" in md
    assert "| build the CUDA extension | failed | 3.2 | exit 1: error: identifier x is undefined |" in md
    assert "| nerfacc | skipped (the Python has no nerfacc) | - | - |" in md
    assert "| kernel tests | ok | 12.0 | 10 passed, 0 failed, 2 skipped (4 CUDA cases passed) |" in md
    assert "| relight3d-ngp | 900 | 150000 | 0.50 | 30.00 | 25.50 | 0.900 |" in md  # 150 K / 300 K rays/s
    assert "| instant-ngp | 1000 | 300000 | 1.00 | 31.00 | 26.00 | 0.950 |" in md
    assert "- tensorf: skipped (x)" in md and "- relight3d-tensorf: failed (RuntimeError: boom)" in md
    assert "| neural-gaffer | 256 | 50 | 50 | float16 | 2 | 0.5 | 12.3 | 3.2 |" in md
    log = (tmp_path / "out" / "gpu_check.log").read_text()
    assert "===== build: failed (3.2 s)\n$ setup.py\nline 180\n" in log and "line 179\n" not in log
    assert "===== nerfacc: skipped (the Python has no nerfacc) (- s)" in log
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["gpu_check.json", "gpu_check.log", "gpu_check.md"]
    for step in steps:  # every step passing or skipped by design: exit 0
        step.status, step.expected_skip = ("skipped", True) if step.skip else ("ok", False)
    assert report.exit_code(steps) == 0


def test_runner_time_boxes_steps_records_failures_and_keeps_to_the_budget(tmp_path: Path):
    opts = plan.parse_args(["--out", str(tmp_path / "out"), "--work", str(tmp_path / "work"), "--budget", "20"],
                           environ={})  # fmt: skip
    run = runner.Runner(opts)
    py = sys.executable
    hang = Step("scene", "hangs", [py, "-c", "import time; time.sleep(60)"], timeout=2)
    fail = Step("backend", "fails", [py, "-c", "import sys; print('working'); sys.exit('gpu_check: boom')"], 30)
    needs = Step("bench_train", "needs the scene", [py, "-c", "pass"], 30, requires=("scene",))
    late = Step("prior_speed", "too late", [py, "-c", "pass"], 30)
    t0 = time.monotonic()
    for step in (hang, fail, needs):
        run.steps.append(step)
        run.run(step)
    assert time.monotonic() - t0 < 10
    assert (hang.status, hang.returncode) == ("timeout", 124) and 1.5 < hang.seconds < 6
    assert (fail.status, fail.summary) == ("failed", "exit 1: gpu_check: boom")
    assert (needs.status, needs.skip) == ("skipped", "needs scene, which did not succeed")
    run.deadline = time.monotonic() + 5  # less than a step needs
    run.steps.append(late)
    run.run(late)
    assert (late.status, late.skip) == ("skipped", "the 20 s budget was spent")
    md = (tmp_path / "out" / "gpu_check.md").read_text()
    assert "| hangs | timeout |" in md and "| too late | skipped (the 20 s budget was spent) | - | - |" in md
    assert (tmp_path / "work" / "logs" / "backend.log").read_text().splitlines()[1] == "working"


def test_a_step_started_late_gets_only_what_is_left_of_the_budget(tmp_path: Path, monkeypatch):
    monkeypatch.setattr(runner, "MIN_STEP_SECONDS", 1.0)
    opts = plan.parse_args(["--out", str(tmp_path / "out"), "--work", str(tmp_path / "work"), "--budget", "4"],
                           environ={})  # fmt: skip
    run = runner.Runner(opts)
    slow = Step("prior_speed", "slow", [sys.executable, "-c", "import time; time.sleep(60)"], timeout=300)
    t0 = time.monotonic()
    run.steps.append(slow)
    run.run(slow)
    assert slow.status == "timeout" and slow.timeout <= 2 and time.monotonic() - t0 < 4


def tiny_wheel(folder: Path) -> Path:
    """A wheel of one module, ``gpu_check_tiny``, as pip builds them."""
    path = folder / "gpu_check_tiny-1.0-py3-none-any.whl"
    info = "gpu_check_tiny-1.0.dist-info"
    with zipfile.ZipFile(path, "w") as whl:
        whl.writestr("gpu_check_tiny.py", "ANSWER = 42\n")
        whl.writestr(f"{info}/METADATA", "Metadata-Version: 2.1\nName: gpu_check_tiny\nVersion: 1.0\n")
        whl.writestr(f"{info}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        whl.writestr(f"{info}/RECORD", "")
    return path


def test_carried_wheels_are_installed_offline_onto_every_steps_path(tmp_path: Path):
    (tmp_path / "whl").mkdir()
    tiny_wheel(tmp_path / "whl")
    opts = plan.parse_args(["--work", str(tmp_path / "work"), "--out", str(tmp_path / "out"), "--wheels",
                            str(tmp_path / "whl")], environ={})  # fmt: skip
    run = runner.Runner(opts)
    opts.site.mkdir(parents=True)
    assert run.install_wheels(sys.executable)
    assert run.steps[0].argv[3:7] == ["install", "-q", "--no-index", "--no-deps"]
    uses = Step("metadata", "imports it", [sys.executable, "-c", "import gpu_check_tiny; print(gpu_check_tiny.ANSWER)"])
    run.steps.append(uses)
    run.run(uses)
    assert uses.status == "ok" and run.logs["metadata"].read_text().splitlines()[1] == "42"


def test_the_wheel_list_is_pinned_by_constraints_and_downloaded_for_the_gpu_machines_python(tmp_path: Path):
    pins = wheels.pinned(wheels.WHEELS, REPO / "constraints.txt")
    assert len(pins) == len(wheels.WHEELS) and all("==" in p for p in pins)
    assert {"nerfstudio", "nerfacc", "diffusers", "tyro"} <= {p.split("==")[0] for p in pins}
    (tmp_path / "c.txt").write_text("Nerfacc==0.5.2\n# a comment\ntyro==1.0 ; python_version >= '3.8'\n")
    assert wheels.pinned(["nerfacc", "tyro"], tmp_path / "c.txt") == ["nerfacc==0.5.2", "tyro==1.0"]
    with pytest.raises(SystemExit, match="no pinned version of diffusers"):
        wheels.pinned(["diffusers"], tmp_path / "c.txt")
    cmd = wheels.download_command(["tyro==1.0"], tmp_path)
    assert cmd[3:6] == ["download", "--quiet", "--no-deps"] and "--only-binary=:all:" in cmd
    assert arg(cmd, "--python-version") == "3.12" and arg(cmd, "--platform") == "manylinux_2_28_x86_64"


def test_the_shell_script_refuses_unknown_arguments_in_one_line():
    done = subprocess.run(["bash", str(REPO / "scripts" / "gpu_check.sh"), "--no-such-option"], capture_output=True,
                          text=True, timeout=60)  # fmt: skip
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr == "scripts/gpu_check.sh: unrecognized arguments: --no-such-option (see --help)\n"


def test_without_a_venv_the_system_python_is_probed_and_what_it_lacks_is_said(tmp_path: Path, monkeypatch, capsys):
    """A bare GPU machine: no .venv, no install, no wheels; the steps are planned for the system's python3 and every
    one it cannot run says which module it lacks (the orchestrator itself needs only the standard library)."""
    system = tmp_path / "bin" / "python3"  # a Python without torch: this one without site-packages
    system.parent.mkdir()
    system.write_text(f'#!/bin/sh\nexec {sys.executable} -S "$@"\n')
    system.chmod(0o755)
    (tmp_path / "no_wheels").mkdir()
    monkeypatch.setattr(runner.Runner, "venv", tmp_path / "no_venv" / "bin" / "python")
    monkeypatch.setenv("PATH", f"{system.parent}:/usr/bin:/bin")
    out = tmp_path / "out"
    code = runner.main(["--no-install", "--out", str(out), "--work", str(tmp_path / "work"), "--wheels",
                        str(tmp_path / "no_wheels")])  # fmt: skip
    doc = json.loads((out / "gpu_check.json").read_text())
    steps = {s["name"]: s for s in doc["steps"]}
    assert code == 1 and doc["passed"] is False
    assert doc["python_choice"] == f"the system's {system} (no .venv; install: skipped (no .venv, and --no-install))"
    assert steps["environment"]["status"] == "ok" and steps["environment"]["data"]["modules"]["torch"] is None
    assert steps["wheels"]["skip"] == f"no wheels in {tmp_path / 'no_wheels'}"
    assert steps["build"]["skip"] == "the Python has no torch, setuptools"
    assert steps["bench_train"]["skip"] == "the Python has no torch, nerfstudio"
    assert [s["name"] for s in doc["steps"]] == list(plan.STEP_NAMES)
    assert "| install .venv (scripts/install.sh) | skipped (no .venv, and --no-install) | - | - |" in (
        capsys.readouterr().out
    )
