"""Pure decisions from a snapshot and a clock: the update state machine, crash back-off, who may start
(concurrency, ordering, schedule windows). Imports only `brupop.models` and the standard library, so
every rule is unit- and property-tested without a cluster."""
