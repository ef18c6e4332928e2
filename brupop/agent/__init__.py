"""The agent: one per Bottlerocket node. It watches its own BottlerocketShadow and Node, drives the host's
update API over the Unix socket, asks the brupop apiserver for every cluster change, and reports status."""
