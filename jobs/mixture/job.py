"""The DataMixture job: check inputs, scan (pass 1), plan, build (pass 2), finish, commit.

Both passes are Ray Data maps over input files; the driver only merges integer statistics,
packs the per-file trailing partial chunks and the validation documents in file order, and
writes the manifest last. The output depends on the config alone: not on worker count,
block size, batch size or arrival order.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from longreach.jobs.mixture.manifest import build_manifest, config_hash, output_config, plot_png
from longreach.jobs.mixture.output import ConfigConflict, check_output, finish
from longreach.jobs.mixture.plan import DomainStats, Scorer, group_files, make_plan, merge_stats
from longreach.jobs.mixture.readers import FileUnit, InputError, check_first_record, list_files
from longreach.jobs.mixture.tokenizer import TokenizerInfo, load_tokenizer
from longreach.jobs.mixture.units import BuildSettings, build_unit, scan_unit, unit_name
from longreach.jobs.storage import (
    Progress,
    filesystem,
    join,
    read_json_if_exists,
    write_bytes,
    write_json,
)
from longreach.operator.datamixture.spec import DataMixtureSpec, MixtureJobConfig

log = logging.getLogger("longreach.mixture")
LOCAL_RAY_START_ATTEMPTS = 3


@dataclass
class RunOptions:
    """How the job runs; none of it changes the output."""

    ray_address: str | None = None
    """Connect to this Ray cluster (a RayJob sets RAY_ADDRESS); None starts a local one."""
    num_cpus: int | None = None
    """CPUs of a local Ray instance; None: all."""
    workers: int | None = None
    """At most this many files processed at once; None: as many as Ray schedules."""
    files_per_task: int = 1
    """Work units per Ray Data block: files in the scan, file groups in the build."""
    batch_size: int = 256
    """Documents per tokenizer batch."""
    progress_interval: float = 2.0
    """Seconds between progress.json writes."""


@dataclass
class Context:
    spec: DataMixtureSpec
    options: RunOptions
    progress: Progress
    units: list[FileUnit] = field(default_factory=list)
    state: dict[str, Any] = field(default_factory=dict)

    @property
    def out(self) -> str:
        return self.spec.output.uri

    @property
    def work(self) -> str:
        return join(self.spec.output.uri, "_work")


def connect_ray(options: RunOptions) -> None:
    """Reuse an initialised Ray, join RAY_ADDRESS's cluster, or start a local instance.
    Workers inherit PYTHONSAFEPATH so the repository's `operator/` folder never shadows the
    standard library when the driver runs from the repository root."""
    import ray

    if ray.is_initialized():
        return
    runtime_env = {
        "env_vars": {
            "PYTHONSAFEPATH": "1",
            "RAYON_RS_NUM_CPUS": "1",
            "TOKENIZERS_PARALLELISM": "false",
        }
    }
    if options.ray_address:
        ray.init(address=options.ray_address, runtime_env=runtime_env, log_to_driver=False)
        return
    # A local start has fixed deadlines (the raylet waits ~15 s for its agents, the driver 30 s
    # for the raylet) that a loaded two-core machine can miss; a second start usually finds
    # the files it imports cached and comes up in seconds.
    for attempt in range(1, LOCAL_RAY_START_ATTEMPTS + 1):
        try:
            ray.init(
                num_cpus=options.num_cpus,
                include_dashboard=False,
                runtime_env=runtime_env,
                log_to_driver=False,
                configure_logging=False,
            )
            return
        except Exception as e:
            ray.shutdown()
            if attempt == LOCAL_RAY_START_ATTEMPTS:
                raise
            log.warning("local Ray did not start (attempt %d): %s; trying again", attempt, e)


def ray_map(
    items: list[int], fn: Callable[[int], dict[str, Any]], options: RunOptions
) -> Iterator[dict[str, Any]]:
    """fn over items in Ray Data, one result at a time as they finish (in any order)."""
    import ray
    from ray.data import DataContext

    DataContext.get_current().enable_progress_bars = False
    blocks = max(1, math.ceil(len(items) / options.files_per_task))
    ds = ray.data.from_items([{"i": i} for i in items], override_num_blocks=blocks)

    def apply(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {
            "i": batch["i"],
            "result": np.array([_call(fn, int(i)) for i in batch["i"]], dtype=object),
        }

    ds = ds.map_batches(
        apply, batch_size=options.files_per_task, concurrency=options.workers, num_cpus=1
    )
    for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
        for text in batch["result"]:
            result = json.loads(text)
            if "taskError" in result:
                error = result["taskError"]
                raise (InputError if error["input"] else TaskError)(error["message"])
            yield result


class TaskError(Exception):
    """An unexpected error in a Ray task, with its type and message."""


def _call(fn: Callable[[int], dict[str, Any]], i: int) -> str:
    """fn(i) as JSON, or the error as a result: Ray hands the driver a wrapper whose cause
    chain (our InputError naming the file) does not survive pickling."""
    try:
        return json.dumps(fn(i))
    except Exception as exc:
        is_input = isinstance(exc, InputError)
        message = str(exc) if is_input else f"{type(exc).__name__}: {exc}"
        return json.dumps({"taskError": {"input": is_input, "message": message}})


def unwrap(exc: BaseException) -> BaseException:
    """The user's error inside Ray's wrappers (UserCodeException -> RayTaskError -> cause):
    our own InputError where there is one, else the innermost error that is not Ray's."""
    found, current, seen = exc, exc, set()
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, InputError | ConfigConflict):
            return current
        if not type(current).__module__.startswith("ray"):
            found = current
        nxt = getattr(current, "cause", None)
        current = nxt if isinstance(nxt, BaseException) else current.__cause__
    return found


def prepare(ctx: Context) -> TokenizerInfo:
    """Every cheap check before the expensive work: tokenizer, sources, first records."""
    storage, strategy = ctx.spec.storage, ctx.spec.strategy
    if strategy.type == "upsample-domains" and sum(strategy.domainShares.values()) > 1:
        raise InputError(
            f"strategy.domainShares: the upsampled domains' shares sum to "
            f"{sum(strategy.domainShares.values()):.3f}, over 1; lower them"
        )
    tokenizer = load_tokenizer(ctx.spec.tokenizer, storage)
    for i, source in enumerate(ctx.spec.sources):
        files = list_files(i, source, storage)
        check_first_record(files[0], source, storage)
        ctx.units.extend(files)
    write_json(
        join(ctx.work, "config.json"),
        {"configHash": config_hash(ctx.spec), "config": output_config(ctx.spec)},
        storage,
    )
    return tokenizer


def scan(ctx: Context, scorer: Scorer, tokenizer: TokenizerInfo) -> dict[str, DomainStats]:
    """Pass 1 (or its saved result): per-domain statistics; fails on too many corrupt lines."""
    spec, storage = ctx.spec, ctx.spec.storage
    saved = read_json_if_exists(join(ctx.work, "scan.json"), storage)
    if saved is not None:
        ctx.state.update(
            records=saved["records"], corrupt=saved["corrupt"], file_eligible=saved["fileEligible"]
        )
        return {d: DomainStats.from_json(s) for d, s in saved["stats"].items()}
    units = ctx.units
    stats: dict[str, DomainStats] = {}
    records = corrupt = 0
    examples: list[str] = []
    file_eligible: list[dict[str, int]] = [{} for _ in units]

    def one(i: int) -> dict[str, Any]:
        return {
            "file": i,
            **scan_unit(units[i], spec.sources[units[i].source], storage, scorer, tokenizer),
        }

    for done, part in enumerate(ray_map(list(range(len(units))), one, ctx.options), start=1):
        file_eligible[part["file"]] = part["eligibleTokens"]
        merge_stats(stats, {d: DomainStats.from_json(s) for d, s in part["stats"].items()})
        records += part["records"]
        corrupt += part["corrupt"]
        examples.extend(part["examples"])
        ctx.progress.report(
            state="running",
            message=f"scanning: {done}/{len(units)} files",
            documentsRead=records,
            tokensWritten=0,
            percent=round(30 * done / len(units), 2),
        )
    if corrupt > spec.maxCorruptFraction * records:
        raise InputError(
            f"{corrupt} of {records} records are corrupt ({corrupt / max(records, 1):.3%}), more than "
            f"maxCorruptFraction {spec.maxCorruptFraction}; first: {'; '.join(sorted(examples)[:3])}"
        )
    ctx.state.update(records=records, corrupt=corrupt, file_eligible=file_eligible)
    write_json(
        join(ctx.work, "scan.json"),
        {
            "records": records,
            "corrupt": corrupt,
            "fileEligible": file_eligible,
            "stats": {d: s.to_json() for d, s in stats.items()},
        },
        storage,
    )
    return stats


def build(ctx: Context, settings: BuildSettings) -> list[dict[str, Any]]:
    """Pass 2 over the file groups not done yet; every group's summary in group order."""
    storage, units, sources = ctx.spec.storage, ctx.units, ctx.spec.sources
    groups = group_files(ctx.state["file_eligible"], settings.plans, settings.sequence_length)
    summaries: dict[int, dict[str, Any]] = {}
    for g in range(len(groups)):
        saved = read_json_if_exists(join(ctx.work, f"{unit_name(g)}.json"), storage)
        if saved is not None:
            summaries[g] = saved
    todo = [g for g in range(len(groups)) if g not in summaries]

    def one(g: int) -> dict[str, Any]:
        return build_unit(g, [(units[i], sources[units[i].source]) for i in groups[g]], settings)

    for summary in ray_map(todo, one, ctx.options) if todo else iter(()):
        summaries[summary["unit"]] = summary
        done_files = sum(len(groups[g]) for g in summaries)
        ctx.progress.report(
            state="running",
            message=f"tokenizing and packing: {done_files}/{len(units)} files",
            documentsRead=ctx.state["records"],
            tokensWritten=sum(s["chunks"] for s in summaries.values()) * settings.sequence_length,
            percent=round(30 + 65 * done_files / len(units), 2),
        )
    return [summaries[g] for g in range(len(groups))]


def result_of(manifest: dict[str, Any], uri: str) -> dict[str, Any]:
    """The status result model's fields, from a manifest."""
    return {
        "uri": uri,
        "tokens": manifest["tokens"],
        "chunks": manifest["chunks"],
        "domainShares": manifest["domainShares"]["after"],
        "longDocumentTokenFraction": manifest["longDocumentTokenFraction"]["after"],
    }


def run(config: MixtureJobConfig, options: RunOptions | None = None) -> dict[str, Any]:
    """Build the mixture; returns the manifest. Raises InputError, ConfigConflict or the
    storage error, after reporting it in progress.json."""
    spec = config.spec
    options = options or RunOptions()
    ctx = Context(spec, options, Progress(spec.output.uri, spec.storage, options.progress_interval))
    try:
        return _run(ctx)
    except BaseException as exc:
        err = unwrap(exc)
        # A conflict means the output (and its progress.json) belongs to another config:
        # leave it as it is; the error goes to stderr and the exit code.
        if not isinstance(err, ConfigConflict):
            _report_failure(ctx, err)
        if err is not exc:
            raise err from None
        raise


def _report_failure(ctx: Context, err: BaseException) -> None:
    error = str(err) if isinstance(err, InputError) else f"{type(err).__name__}: {err}"
    try:
        ctx.progress.report(
            force=True,
            state="failed",
            message=f"failed: {error}"[:300].replace("\n", " "),
            error=error,
            documentsRead=ctx.state.get("records", 0),
            tokensWritten=0,
            percent=0,
        )
    except Exception:
        log.warning("could not write progress.json to %s", ctx.out)


def _run(ctx: Context) -> dict[str, Any]:
    spec, storage = ctx.spec, ctx.spec.storage
    done = check_output(spec)
    if done is not None:
        ctx.progress.report(
            force=True,
            state="succeeded",
            message="already built with this config",
            documentsRead=done["documents"]["read"],
            tokensWritten=done["tokens"],
            percent=100,
            result=result_of(done, ctx.out),
        )
        return done
    try:
        ctx.progress.report(
            force=True,
            state="running",
            message="checking inputs",
            documentsRead=0,
            tokensWritten=0,
            percent=0,
        )
    except Exception as exc:
        raise InputError(
            f"output.uri {ctx.out}: cannot write there ({type(exc).__name__}: {exc}); "
            "check the bucket, storage.endpoint and the AWS credentials"
        ) from exc
    tokenizer = prepare(ctx)
    connect_ray(ctx.options)
    scorer = Scorer.from_spec(spec)
    before = scan(ctx, scorer, tokenizer)
    plans, notes = make_plan(spec, before)
    for warning in notes["warnings"]:
        log.warning("%s", warning)
    settings = BuildSettings(
        scorer=scorer,
        plans=plans,
        tokenizer=tokenizer,
        sequence_length=spec.sequenceLength,
        cut_tokens=spec.strategy.cutTokens if spec.strategy.type == "cut" else None,
        output_uri=ctx.out,
        storage=storage,
        batch_size=ctx.options.batch_size,
    )
    return _commit(ctx, tokenizer, before, plans, notes, build(ctx, settings))


def _commit(
    ctx: Context,
    tokenizer: TokenizerInfo,
    before: dict[str, DomainStats],
    plans: dict[str, Any],
    notes: dict[str, Any],
    summaries: list[dict[str, Any]],
) -> dict[str, Any]:
    """The driver's last shards, the plots, then the manifest; then report success."""
    spec, storage = ctx.spec, ctx.spec.storage
    after: dict[str, DomainStats] = {}
    for s in summaries:
        merge_stats(after, {d: DomainStats.from_json(x) for d, x in s["after"].items()})
    finished = finish(spec, summaries)
    counts = {
        **finished["counts"],
        "documents": {"read": ctx.state["records"], "corrupt": ctx.state["corrupt"]},
    }
    manifest = build_manifest(
        spec=spec,
        tokenizer=tokenizer.manifest(),
        before=before,
        after=after,
        plans=plans,
        plan_notes=notes,
        shards=finished["shards"],
        counts=counts,
        warnings=notes["warnings"],
    )
    manifest["validationChunksPerDomain"] = finished["validationDomains"]
    for name in ("domains", "lengths"):
        write_bytes(join(ctx.out, f"{name}.png"), plot_png(manifest, name), storage)
    write_json(join(ctx.out, "manifest.json"), manifest, storage)
    warned = (
        f"; {len(notes['warnings'])} warnings, first: {notes['warnings'][0]}"
        if notes["warnings"]
        else ""
    )
    ctx.progress.report(
        force=True,
        state="succeeded",
        message=f"wrote {manifest['chunks']} chunks of {spec.sequenceLength} tokens{warned}",
        documentsRead=ctx.state["records"],
        tokensWritten=manifest["tokens"],
        percent=100,
        result=result_of(manifest, ctx.out),
    )
    _clean(ctx)
    return manifest


def _clean(ctx: Context) -> None:
    """Remove the scratch files once the manifest is committed (they are only for resuming)."""
    fs, path = filesystem(ctx.work, ctx.spec.storage)
    with contextlib.suppress(FileNotFoundError):
        fs.rm(path, recursive=True)
