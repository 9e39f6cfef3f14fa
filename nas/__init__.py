"""hwnas: hardware-aware neural architecture search."""
from nas.threads import prepare_environment

__version__ = "0.1.0"

# Before any hwnas module imports torch: its OpenMP runtime reads the wait policy once,
# when it loads (nas/threads.py says why this matters on a shared machine).
prepare_environment()
