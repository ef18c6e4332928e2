"""brupop: the Bottlerocket update operator, in Python.

Three programs share this package: the controller decides which node updates when, the agent drives one
node's Bottlerocket host through its update, and the apiserver is the only door through which agents
change the cluster. See README.md and DESIGN.md for how the parts fit.
"""

__version__ = "0.1.0"
