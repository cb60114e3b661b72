"""The ground floor: what the operator and the jobs agree on, importing neither.

One module per kind (`datamixture`, `contextextension`, `needleeval`) holds its spec and
status models, its job config, its `progress.json` report and its `KindContract`; `common`
the types they share; `report` and `storage` the typed files and fsspec helpers both sides
use; `errors` the bad-input error and its exit code. Pure pydantic and fsspec: no kopf,
kubernetes, torch, ray, deepspeed or transformers (the import-linter contracts in
pyproject.toml hold this).
"""
