"""``python -m gpu_check`` (with ``scripts/`` on the path): what ``scripts/gpu_check.sh`` runs."""

import sys

from gpu_check.runner import main

sys.exit(main())
