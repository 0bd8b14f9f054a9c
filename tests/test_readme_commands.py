"""Every command in README.md's ```bash blocks runs, on tiny data for a few iterations, or is listed here with why.

The test reads the README, so the two cannot drift:

1. It extracts each command line of the ```bash blocks whose program is ``ns-train``, ``relight3d`` or
   ``.venv/bin/{relight3d,ns-train,python}`` (``\\`` continuations joined, ``# comments`` dropped, ``a && b`` split,
   ``[optional arguments]`` left out and checked against the command's ``--help``).
2. Each command must match exactly one pattern of :data:`RUN` (run it) or :data:`NOT_RUN` (a reason it cannot run
   in a test; its options are still checked against the program's ``--help``), and every pattern must match a
   command: a new README command that is neither run nor listed fails, and so does a stale table entry.
3. A run replaces the README's placeholder paths (:data:`PLACEHOLDERS`) with tiny generated data, adds the options
   that make it short (:data:`NS_TRAIN_SHORT`, :data:`CLI_SHORT`: for ``relight3d`` subcommands only the options
   their current ``--help`` lists), runs it as a subprocess with the venv's console scripts in a scratch folder, and
   checks its exit code and the files it must write.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import runpy
import shlex
import subprocess
import sys
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import pytest

from relight3d.data.dataparser_configs import DATAPARSERS
from relight3d.data.synthetic import SceneSpec, write_blender_scene

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
BIN = Path(sys.executable).parent

PROGRAMS: Dict[str, str] = {
    "ns-train": "ns-train",
    ".venv/bin/ns-train": "ns-train",
    "relight3d": "relight3d",
    ".venv/bin/relight3d": "relight3d",
    ".venv/bin/python": "python",
}
"""README program -> the name it is run by (from the venv of the Python running the tests)."""

Command = Tuple[str, ...]


# --- reading the README ---------------------------------------------------------------------------------------------
def split_optional(tokens: Sequence[str]) -> Tuple[List[str], List[str]]:
    """``(command, optional)``: the tokens outside and inside ``[...]`` (the README's notation for options)."""
    kept: List[str] = []
    optional: List[str] = []
    depth = 0
    for token in tokens:
        if token.startswith("[") and depth == 0:
            depth, token = 1, token[1:]
        target = optional if depth else kept
        if depth and token.endswith("]"):
            depth, token = 0, token[:-1]
        if token:
            target.append(token)
    return kept, optional


def readme_commands(text: str) -> List[Tuple[Command, Tuple[str, ...]]]:
    """``(command, optional tokens)`` for every command line of the ```bash blocks that runs one of PROGRAMS."""
    found = []
    for block in re.findall(r"^```bash\n(.*?)^```", text, flags=re.S | re.M):
        logical, pending = [], ""
        for line in block.splitlines():
            if line.rstrip().endswith("\\"):
                pending += line.rstrip()[:-1] + " "
            else:
                logical.append(pending + line)
                pending = ""
        for line in logical:
            tokens = shlex.split(line, comments=True)
            segment: List[str] = []
            for token in [*tokens, "&&"]:
                if token in ("&&", "||", ";"):
                    if segment and segment[0] in PROGRAMS:
                        kept, optional = split_optional(segment)
                        found.append(((PROGRAMS[kept[0]], *kept[1:]), tuple(optional)))
                    segment = []
                else:
                    segment.append(token)
    return found


COMMANDS = readme_commands(README.read_text(encoding="utf-8"))


# --- what runs, what does not ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Run:
    """How to run a README command in a test."""

    shorten: Callable[[List[str], Path], List[str]]
    """(command with placeholders replaced, scratch folder) -> the command to run."""
    check: Callable[["Result"], None]
    """Assertions on the finished run."""


@dataclass
class Result:
    """A finished README command."""

    readme: Command
    argv: List[str]
    proc: subprocess.CompletedProcess
    work: Path
    data: Dict[str, Path]


NS_TRAIN_SHORT = [
    "--vis", "tensorboard", "--max-num-iterations", "3", "--steps-per-save", "3",
    "--steps-per-eval-batch", "1000", "--steps-per-eval-image", "1000",
    "--pipeline.datamanager.train-num-rays-per-batch", "256", "--pipeline.datamanager.eval-num-rays-per-batch", "256",
    "--pipeline.model.occupancy-resolution", "32", "--pipeline.model.samples-per-diagonal", "64",
]  # fmt: skip
"""Method options that make an ns-train run three cheap CPU iterations (put before the first subcommand, so they
come last among the method's options and win over the README's own)."""

GAFFER_SHORT = [
    "--pipeline.stage1-steps", "2", "--pipeline.stage2-steps", "1", "--pipeline.normal-fusion-resolution", "32",
]  # fmt: skip
"""Extra options of relight3d-gaffer runs (3 iterations in all)."""

PRIOR_SHORT = ["--pipeline.prior.shadow-directions-height", "4", "--pipeline.prior.shadow-volume-resolution", "24"]
"""Options of the physical prior (after its subcommand): coarse shadow tracing."""

CLI_SHORT: Dict[str, Dict[str, str]] = {
    "demo": {
        "--resolution": "16", "--n-train": "6", "--n-test": "2", "--supersample": "1", "--steps": "40",
        "--stage1-steps": "2", "--stage2-steps": "0", "--video-frames": "2", "--mesh-resolution": "16",
        "--rays-per-batch": "256",
    },
    "relight": {"--stage1-steps": "2", "--stage2-steps": "1", "--video-frames": "2"},
    "export": {},
}  # fmt: skip
"""``relight3d`` subcommand -> options that make it tiny; only those its ``--help`` lists are added."""


def _is_subcommand(token: str) -> bool:
    return token in DATAPARSERS or re.fullmatch(r"[\w.]+:[\w-]+", token) is not None


def ns_train_short(command: List[str], work: Path) -> List[str]:
    """The ns-train command with NS_TRAIN_SHORT (and GAFFER_SHORT) before its first subcommand, and PRIOR_SHORT
    right after the physical prior's subcommand."""
    extra = ["--output-dir", str(work / "outputs"), *NS_TRAIN_SHORT]
    if command[1] == "relight3d-gaffer":
        extra += GAFFER_SHORT
    at = next((i for i, t in enumerate(command) if i >= 2 and _is_subcommand(t)), len(command))
    command = [*command[:at], *extra, *command[at:]]
    if "pipeline.prior:physical" in command:
        at = command.index("pipeline.prior:physical") + 1
        command[at:at] = PRIOR_SHORT
    return command


def cli_help(argv: Sequence[str]) -> str:
    """The ``--help`` text of ``relight3d <argv>``, in-process."""
    from relight3d.cli import build_parser

    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as exit_:
        build_parser().parse_args([*argv, "--help"])
    assert exit_.value.code == 0
    return out.getvalue()


def script_help(argv: Sequence[str]) -> str:
    """The ``--help`` text of ``python <script> [subcommand]``, in-process."""
    script, rest = REPO / argv[0], list(argv[1:])
    out = io.StringIO()
    saved = sys.argv
    sys.argv = [str(script), *rest, "--help"]
    try:
        with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as exit_:
            runpy.run_path(str(script), run_name="__main__")
    finally:
        sys.argv = saved
    assert exit_.value.code == 0, out.getvalue()
    return out.getvalue()


def lists(help_text: str, flag: str) -> bool:
    """Whether ``help_text`` names option ``flag`` (as a whole word: ``--step`` is not ``--steps``)."""
    return re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", help_text) is not None


def cli_short(command: List[str], work: Path) -> List[str]:
    """The relight3d command with the CLI_SHORT options its subcommand's ``--help`` lists."""
    listed = cli_help(command[1:2])
    extra = [x for flag, value in CLI_SHORT[command[1]].items() if lists(listed, flag) for x in (flag, value)]
    return [*command, *extra]


# --- checks ---------------------------------------------------------------------------------------------------------
def _ok(r: Result) -> None:
    assert r.proc.returncode == 0, f"{shlex.join(r.argv)}\n{r.proc.stdout[-2000:]}\n{r.proc.stderr[-4000:]}"


def check_lists_methods(r: Result) -> None:
    _ok(r)
    for method in ("relight3d-tensorf", "relight3d-ngp", "relight3d-gaffer", "relight3d-sds"):
        assert method in r.proc.stdout, method


def _run_dir(r: Result) -> Path:
    configs = list((r.work / "outputs").rglob("config.yml"))
    assert len(configs) == 1, configs
    return configs[0].parent


def _last_step(run: Path) -> int:
    from relight3d.engine.trainer import CHECKPOINT_PATTERN, latest_checkpoint

    ckpt = latest_checkpoint(run / "nerfstudio_models")
    assert ckpt is not None, f"no checkpoint in {run}"
    return int(CHECKPOINT_PATTERN.match(ckpt.name).group(1))


def check_trained(r: Result) -> None:
    """Exit 0, a config.yml that loads with the dataparser the command named, the last step's checkpoint."""
    from relight3d.engine.loading import read_trainer_config

    _ok(r)
    run = _run_dir(r)
    assert _last_step(run) == 2
    config = read_trainer_config(run / "config.yml")
    if r.readme[1] != "relight3d-gaffer":  # the gaffer takes its data from the trained run
        named = [t for t in r.readme[2:] if t in DATAPARSERS]
        assert type(config.pipeline.datamanager.dataparser) is type(DATAPARSERS[named[0] if named else "blender-data"])


def check_resumed(r: Result) -> None:
    """The run continued from the README's checkpoint folder: three more steps."""
    _ok(r)
    assert "Resumed from" in r.proc.stdout
    assert _last_step(_run_dir(r)) == _last_step(r.data["blender_run"]) + 3


def _output(r: Result, default: str) -> Path:
    argv = r.argv
    return r.work / (argv[argv.index("--output") + 1] if "--output" in argv else default)


def check_demo(r: Result) -> None:
    """Exit 0, and the output folder holds renders, a mesh, a video per light and the HTML report."""
    _ok(r)
    out = _output(r, "renders/demo")
    files = {p.suffix for p in out.rglob("*") if p.is_file()}
    assert {".png", ".ply", ".mp4", ".html"} <= files, (files, r.proc.stdout[-2000:])


def check_relit(r: Result) -> None:
    """Exit 0, one folder per map, and the comparison report."""
    _ok(r)
    out = _output(r, "relit")
    assert (out / "report" / "report.html").is_file(), sorted(p.name for p in out.iterdir())
    for env in r.readme[r.readme.index("--envmap") + 1 :]:
        if env.startswith("--"):
            break
        assert (out / Path(env).stem).is_dir(), env


def check_gbuffers(r: Result) -> None:
    """Exit 0, and the clip of the README's view set, which relight3d's reader loads."""
    from relight3d.data.gbuffer_frames import read_gbuffer_frames

    _ok(r)
    views = r.argv[r.argv.index("--views") + 1]
    assert len(read_gbuffer_frames(_output(r, "gbuffer_frames"), views)) >= 1


WEIGHTED_PRIORS = r"--prior (diffusion-renderer|difareli|relight-unet)"
"""``relight3d relight`` with a prior whose weights (or checkout) cannot be had in a test."""

RUN: Dict[str, Run] = {
    r"ns-train --help": Run(lambda c, w: c, check_lists_methods),
    r"ns-train relight3d-(tensorf|ngp) (?!.*--load-dir).*": Run(ns_train_short, check_trained),
    r"ns-train relight3d-(tensorf|ngp) .*--load-dir .*": Run(ns_train_short, check_resumed),
    r"ns-train relight3d-gaffer (?!.*pipeline\.prior:diffusion-renderer).*": Run(ns_train_short, check_trained),
    r"relight3d demo( .*)?": Run(cli_short, check_demo),
    rf"relight3d relight (?!.*{WEIGHTED_PRIORS}).*": Run(cli_short, check_relit),
    r"relight3d export gbuffers .*": Run(cli_short, check_gbuffers),
}
"""README command patterns (full match of the command, program first) that the test runs."""

NOT_RUN: Dict[str, str] = {
    r"relight3d train-prior (gbuffer|instruct-pix2pix|neural-gaffer) .*": "needs a Stable Diffusion / Zero123 folder; "
    "tests/pipelines/test_prior_training*.py train each model on tiny datasets with tiny components",
    r"relight3d train-prior relight-unet .*": "trains for tens of minutes on a rendered dataset; "
    "tests/pipelines/test_relight_unet.py runs the command for 2 steps on a tiny one",
    r"relight3d data render .*": "renders with Cycles (minutes, needs bpy); tests/benchmark/test_data_render.py "
    "renders 2 objects x 2 maps x 2 turns x 4 views",
    r"relight3d data from-images .*": "needs photos; tests/data/test_image_triplets.py runs it on synthetic ones",
    r"relight3d relight .*--prior diffusion-renderer --prior\.checkout .*": "runs NVIDIA's DiffusionRenderer from the "
    "user's checkout: 56 GB of weights and a large GPU",
    r"relight3d relight .*--prior (diffusion-renderer --prior\.backend builtin|difareli) --prior-path weights/.*": (
        "needs trained weights; tests/pipelines/test_material_gbuffers.py runs both priors end to end on tiny random "
        "ones"
    ),
    r"ns-train relight3d-gaffer .*pipeline\.prior:diffusion-renderer .*": "needs the builtin model's trained weights",
    r"relight3d relight .*--prior-path /tmp/tiny_dr .*": "the demo's field and tiny weights from the lines above; "
    "tests/pipelines/test_material_gbuffers.py runs the same command on the tests' field",
    r"relight3d bench make( .*)?": "renders the Cycles benchmark: 24 minutes on 2 cores, and needs bpy",
    r"relight3d bench check-noise .*": "re-renders benchmark views with Cycles: needs bpy and the rendered benchmark",
    r"python datasets/render_object_scene\.py( .*)?": "renders the bunny scene with Cycles: minutes, and needs bpy",
    r"python -m pytest( .*)?": "the test suite itself",
    r"python scripts/bench_relight\.py .*": "trains and relights benchmark objects (hours) on the rendered benchmark",
    r"python scripts/bench_prior_speed\.py( .*)?": "times diffusion priors at their released size (GBs, minutes)",
    r"python scripts/bench_sds\.py .*": "times relight3d-sds and trains it for minutes",
    r"python scripts/bench_train\.py .*": "trains three methods for 6 minutes each on the rendered bunny scene",
    r"python scripts/bench_ops\.py( .*)?": "times the kernels (minutes of CPU)",
}
"""README command patterns that cannot run in a test, and why."""

PLACEHOLDERS: Dict[str, str] = {
    "path/to/blender_scene": "blender_scene",
    "path/to/nerfstudio_scene": "nerfstudio_scene",
    "path/to/object_folder": "object_folder",
    "path/to/image.png": "image",
    "outputs/.../nerfstudio_models": "blender_run_checkpoints",
    "outputs/obj/relight3d-tensorf/<stamp>/config.yml": "object_run_config",
    "sunrise.exr": "envmap_sunrise",
    "forest.exr": "envmap_forest",
    "studio.exr": "envmap_studio",
}
"""README placeholder -> the tiny data (a key of the ``data`` fixture) it stands for."""


def matches(command: Command, table: Dict) -> List[str]:
    line = " ".join(command)
    return [pattern for pattern in table if re.fullmatch(pattern, line)]


def _id(item: Tuple[Command, Tuple[str, ...]]) -> str:
    return re.sub(r"[^\w.:-]+", "_", " ".join(item[0][:4]))[:60]


RUN_COMMANDS = [c for c in COMMANDS if matches(c[0], RUN)]
NOT_RUN_COMMANDS = [c for c in COMMANDS if matches(c[0], NOT_RUN)]


def test_every_readme_command_is_run_or_listed():
    assert len(COMMANDS) >= 10, "the README's ```bash blocks were not found"
    for command, _ in COMMANDS:
        hits = matches(command, RUN) + matches(command, NOT_RUN)
        assert len(hits) == 1, f"README command {shlex.join(command)!r} matches {hits}: run it or list it in NOT_RUN"
    for table in (RUN, NOT_RUN):
        for pattern in table:
            assert any(re.fullmatch(pattern, " ".join(c)) for c, _ in COMMANDS), f"stale entry {pattern!r}"


def test_the_extraction_reads_what_a_shell_reads():
    text = "```bash\nbash x.sh && .venv/bin/relight3d demo   # a comment\nns-train a \\\n    --b c [--d e]\n```\n"
    assert readme_commands(text) == [(("relight3d", "demo"), ()), (("ns-train", "a", "--b", "c"), ("--d", "e"))]


# --- tiny data ------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Dict[str, Path]:
    """What the placeholders stand for: a 16 px scene in every layout, and two runs trained on it."""
    from test_ns_train_dataparsers import ns_train_config, write_nerfstudio_scene, write_object_folder

    from relight3d.engine.run import train

    root = tmp_path_factory.mktemp("readme_data")
    scene = write_blender_scene(root / "scene", SceneSpec(resolution=16, n_train=6, n_test=2, supersample=1))
    folder = write_object_folder(scene, root / "object", targets=("sunrise", "forest", "studio"))
    out = {
        "blender_scene": scene,
        "nerfstudio_scene": write_nerfstudio_scene(scene, root / "nerfstudio"),
        "object_folder": folder,
        "image": scene / "train" / "r_000.png",
        **{f"envmap_{name}": folder / "envmaps" / f"{name}.exr" for name in ("sunrise", "forest", "studio")},
    }
    short = ["--output-dir", str(root / "runs"), *NS_TRAIN_SHORT]
    blender = train(ns_train_config(["relight3d-tensorf", *short, "--data", str(scene)]), None, root / "runs")
    out["blender_run"] = blender.base_dir
    out["blender_run_checkpoints"] = blender.base_dir / "nerfstudio_models"
    args = ["relight3d-tensorf", *short, "--max-num-iterations", "60", "relight3d-objaverse", "--data", str(folder)]
    out["object_run_config"] = train(ns_train_config(args), None, root / "runs").base_dir / "config.yml"
    return out


def substitute(command: Command, data: Dict[str, Path]) -> List[str]:
    """The command with its placeholders replaced; an unknown placeholder fails with what to add to the table."""
    argv = []
    for token in command:
        if token in PLACEHOLDERS:
            token = str(data[PLACEHOLDERS[token]])
        elif "path/to/" in token or "<" in token or "..." in token:
            pytest.fail(f"README placeholder {token!r} is not in PLACEHOLDERS of {Path(__file__).name}")
        argv.append(token)
    return argv


# --- the commands ---------------------------------------------------------------------------------------------------
PARALLEL = 2
"""README commands run at once (CI's machine has 2 cores; most of a short ns-train run is nerfstudio's imports)."""

COST = {"demo": 4, "relight": 3, "relight3d-gaffer": 3}
"""Rough relative run times: the longest commands start first."""


def _key(item: Tuple[Command, Tuple[str, ...]]) -> str:
    return shlex.join(item[0])


def _prepare(item: Tuple[Command, Tuple[str, ...]], data: Dict[str, Path], work: Path) -> List[str]:
    """The argv to run (in the main thread: it reads ``--help`` texts in-process)."""
    command, optional = item
    if optional:  # documented but left out of the run: its options must exist
        listed = cli_help(command[1:2]) if command[0] == "relight3d" else ""
        for flag in (t for t in optional if t.startswith("--")):
            assert lists(listed, flag), f"{shlex.join(command)}: optional {flag} is not an option"
    (run,) = [RUN[p] for p in matches(command, RUN)]
    return run.shorten(substitute(command, data), work)


def _execute(argv: List[str], work: Path) -> subprocess.CompletedProcess:
    program = BIN / argv[0] if argv[0] != "python" else Path(sys.executable)
    env = dict(os.environ, PYTHONWARNINGS="ignore", RELIGHT3D_CACHE=str(work / "cache"))
    return subprocess.run([str(program), *argv[1:]], cwd=work, env=env, capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def launched(request: pytest.FixtureRequest, data: Dict[str, Path], tmp_path_factory: pytest.TempPathFactory):
    """Every README command selected in this session, started PARALLEL at a time: key -> (argv, work, future)."""
    selected = [
        item.callspec.params["item"]
        for item in request.session.items
        if getattr(item, "originalname", "") == "test_readme_command_runs" and item.module.__name__ == __name__
    ]
    selected.sort(key=lambda it: -max(COST.get(t, 1) for t in it[0][:2]))
    pool = ThreadPoolExecutor(max_workers=PARALLEL)
    started: Dict[str, Tuple[Optional[List[str]], Path, Future]] = {}
    for item in selected:
        work = tmp_path_factory.mktemp("readme_command")
        try:
            argv = _prepare(item, data, work)
        except BaseException as err:  # noqa: BLE001 - reported by the command's own test
            failed: Future = Future()
            failed.set_exception(err)
            started[_key(item)] = (None, work, failed)
            continue
        started[_key(item)] = (argv, work, pool.submit(_execute, argv, work))
    yield started
    pool.shutdown(wait=True, cancel_futures=True)


@pytest.mark.parametrize("item", RUN_COMMANDS, ids=[_id(c) for c in RUN_COMMANDS])
def test_readme_command_runs(item, launched, data):
    argv, work, future = launched[_key(item)]
    proc = future.result()
    (run,) = [RUN[p] for p in matches(item[0], RUN)]
    run.check(Result(readme=item[0], argv=argv, proc=proc, work=work, data=data))


def _help_of(command: Command) -> Optional[str]:
    if command[0] == "relight3d":
        return cli_help([t for t in command[1:3] if not t.startswith("-")])
    if command[0] == "python" and command[1].startswith("scripts/"):
        sub = [command[2]] if len(command) > 2 and not command[2].startswith("-") else []
        return script_help([command[1], *sub])
    return None  # python -m pytest


@pytest.mark.parametrize("item", NOT_RUN_COMMANDS, ids=[_id(c) for c in NOT_RUN_COMMANDS])
def test_listed_command_options_exist(item):
    """A command the test cannot run still names a real program, subcommand and options."""
    command, optional = item
    listed = _help_of(command)
    if listed is None:
        pytest.skip(NOT_RUN[matches(command, NOT_RUN)[0]])
    for flag in (t for t in (*command, *optional) if t.startswith("--")):
        if flag.startswith("--prior.") and command[:2] == ("relight3d", "relight"):
            assert prior_has_field(command, flag), f"{shlex.join(command)}: {flag} is not a field of the prior"
            continue
        assert lists(listed, flag), f"{shlex.join(command)}: {flag} is not in its --help"


def prior_has_field(command: Command, flag: str) -> bool:
    """Whether ``--prior.<field>`` names a field of the config of the command's ``--prior``."""
    import dataclasses

    from relight3d.priors.registry import prior_config

    config = prior_config(command[command.index("--prior") + 1])
    return flag.removeprefix("--prior.").replace("-", "_") in {f.name for f in dataclasses.fields(config)}
