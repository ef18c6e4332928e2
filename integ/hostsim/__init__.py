"""A simulator of the Bottlerocket host update API (HTTP on a Unix socket), faithful to the wire format,
the update lock, the asynchronous commands and the reboot, for one host or a thousand in one process."""
