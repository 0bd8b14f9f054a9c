"""relight3d's GPU check: one run, on a machine with a GPU, of everything that needs one (``scripts/gpu_check.sh``).

A GPU is lent only now and then, for minutes, so the check must work the first time. It

1. finds a Python (``.venv``, else ``scripts/install.sh``, else the system ``python3``), installs offline the
   wheels carried for it (``.whl``, made here by ``--fetch-wheels``) and says what it still lacks;
2. gives nerfstudio relight3d's entry points when relight3d is only on the path (an egg-info, nothing compiled);
3. builds the CUDA extension for the GPU it finds and checks that the ops use the CUDA kernels;
4. runs the kernel tests (tests/ops: CUDA kernels against the torch reference, forward and backward, the hash
   grid's too) and the prior tests on CUDA;
5. times ``relight3d-tensorf`` and ``relight3d-ngp`` against nerfstudio's ``instant-ngp`` on a synthetic scene
   rendered on the spot, and one stage-1 relighting pass of each diffusion prior at its released size (random
   weights);
6. writes ``gpu_check.json``, ``gpu_check.md`` and ``gpu_check.log`` (the tail of every step's log).

Every step runs under ``timeout`` inside one overall time budget; a failing step is recorded and the next one runs.
``--cpu-dry-run`` skips the CUDA parts and runs the rest on the CPU at tiny sizes. Modules:

* :mod:`gpu_check.plan`: options and the list of steps (pure: no subprocess, no torch);
* :mod:`gpu_check.runner`: runs the steps (stdlib only, so that it runs under any Python);
* :mod:`gpu_check.report`: the JSON and Markdown;
* :mod:`gpu_check.probe`: what a step runs with the chosen Python (environment, kernels, scene);
* :mod:`gpu_check.wheels`: the wheels a bare GPU machine's Python lacks.
"""
