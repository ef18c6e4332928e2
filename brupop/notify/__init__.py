"""Outgoing notifications: tell people what the fleet is doing (a rollout started, a node failed, a pool
halted) through a generic JSON webhook and Slack-compatible incoming webhooks.

A notification must never slow down or fail an update step, so the caller's `Notifier.notify()` only puts
the notice in a bounded queue and returns; a task of its own per destination sends it, retrying with
jittered back-off, and counts what was sent, failed or dropped (`brupop_notifications_total`).
"""
