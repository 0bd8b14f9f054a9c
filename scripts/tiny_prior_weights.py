"""Write tiny *random* weights of a relighting prior, in the folder layout the prior loads, to check the plumbing.

The relit images such weights give are noise-like and mean nothing: use them to check that ``relight3d relight``,
``ns-train relight3d-gaffer`` and your scripts run end to end with a prior whose real weights you do not have here
(DiffusionRenderer's builtin model is trained by ``relight3d train-prior gbuffer``; DiFaReli's released weights come
from its authors). Usage::

    python scripts/tiny_prior_weights.py diffusion-renderer --output weights/tiny_dr
    relight3d relight --field-run <config.yml> --envmap <map.exr> --output out \\
        --prior diffusion-renderer --prior.backend builtin --prior-path weights/tiny_dr

    python scripts/tiny_prior_weights.py difareli --output weights/tiny_difareli
    relight3d relight ... --prior difareli --prior-path weights/tiny_difareli
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Callable, Dict


def _diffusion_renderer(folder: Path, seed: int) -> Path:
    from relight3d.priors.diffusion_renderer import tiny_builtin_folder

    return tiny_builtin_folder(folder, seed=seed)


def _difareli(folder: Path, seed: int) -> Path:
    from relight3d.priors.difareli import tiny_difareli_folder

    return tiny_difareli_folder(folder, seed=seed)


WRITERS: Dict[str, Callable[[Path, int], Path]] = {
    "diffusion-renderer": _diffusion_renderer,
    "difareli": _difareli,
}
"""The priors this script writes tiny weights for (those whose released weights cannot be had here)."""


def main(argv=None) -> int:  # noqa: ANN001
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("prior", choices=sorted(WRITERS), help="the prior whose folder layout to write")
    parser.add_argument("--output", type=Path, required=True, help="the folder to write (must not hold files)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random weights")
    args = parser.parse_args(argv)
    if args.output.exists() and any(args.output.iterdir()):
        print(f"tiny_prior_weights: error: {args.output}: already holds files", file=sys.stderr)
        return 2
    folder = WRITERS[args.prior](args.output, args.seed)
    print(f"{args.prior}: tiny random weights (for plumbing checks only, not a model) in {folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
