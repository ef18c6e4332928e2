"""The only code that speaks to the Kubernetes API: configuration, a thin typed client over httpx,
informers, drain, leader election. No Kubernetes client library: `kubernetes_asyncio` alone costs about
72 MiB at import, over the agent's 50Mi limit (see DESIGN.md for the measurements)."""
