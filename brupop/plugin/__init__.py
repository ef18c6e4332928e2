"""`kubectl brupop` (also `brupop status|pause|resume|hold|release|retry`): what operators ask brupop, one
command away. `status` says per node where it stands and, in plain words, why it waits, and per policy how
far the rollout is; the other commands are small, audited writes (each records an Event naming who did
it).

Everything is computed from what the cluster holds, with the same pure decisions the controller makes
(`brupop.policy`), so the plugin and the controller cannot disagree about a rule; reasons only the
controller can know (a health gate's verdict) come from what it writes on each shadow
(`brupop.models.progress`).
"""
