"""Test and demo infrastructure: a real Kubernetes control plane built from Go modules, the Bottlerocket
host simulator, and end-to-end scenarios. Not shipped in the brupop package."""
