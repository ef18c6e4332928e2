"""The controller: watches every BottlerocketShadow and opted-in Node, runs the pure rollout policy over
the whole fleet on every change (and at time-based deadlines), and writes the resulting specs. One leader
at a time writes; the others wait on the Lease."""
