"""brupop: the Bottlerocket update operator, in Python.

Three programs share this package: the controller decides which node updates when, the agent drives one
node's Bottlerocket host through its update, and the apiserver is the only door through which agents
change the cluster. See README.md and DESIGN.md for how the parts fit.
"""

__version__ = "0.1.0"

import sys as _sys

# httpx imports its command-line client (click, and rich when present) whenever click is installed, and
# uvicorn installs click in our image. No brupop program runs that client: marking its module absent makes
# httpx skip it (it expects the ImportError) and saves about 2.5 MiB of resident memory per process.
_sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]
