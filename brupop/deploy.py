"""The names the Helm charts (`charts/`) give brupop's service accounts, for the code that acts as them (the
test harness, the RBAC matrix test). The charts are the install's only source; tests/integ/test_charts.py
fails when these names drift from what they render."""

from typing import Final

AGENT_SA: Final = "brupop-agent-service-account"
APISERVER_SA: Final = "brupop-apiserver-service-account"
CONTROLLER_SA: Final = "brupop-controller-service-account"
