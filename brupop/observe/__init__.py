"""Health sources brupop observes (Prometheus), returning plain facts (`brupop.models.health`) that the
health gates (`brupop.policy.gates`) judge. Nothing else in brupop speaks PromQL over HTTP."""
