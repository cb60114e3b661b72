"""What runs inside the pods: mixture (Ray Data), train (DeepSpeed), needle (eval), and what
they share (entry.py, fetch.py).

It stands on `longreach.contract` and never imports `longreach.operator`, kopf or the
Kubernetes client (import-linter holds this); heavy libraries are imported inside the job
that needs them.
"""
