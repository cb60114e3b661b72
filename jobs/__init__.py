"""What runs inside the pods: mixture (Ray Data), train (DeepSpeed), needle (eval), shared I/O.

Nothing here imports kopf; heavy libraries are imported inside the job that needs them.
"""
