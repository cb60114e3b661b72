"""The Longreach operator: the kopf flow, one package per kind (adapter and pure child builders),
the registry of kinds, the local runner and the CLI.

It stands on `longreach.contract` and never imports `longreach.jobs`, torch, Ray, DeepSpeed or
transformers (import-linter holds this).
"""
