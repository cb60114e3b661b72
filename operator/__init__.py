"""The Longreach operator: spec models, child builders and kopf handlers, one package per kind.

Nothing here imports torch, ray or deepspeed; job code lives in `longreach.jobs`.
"""
