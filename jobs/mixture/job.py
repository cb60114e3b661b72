"""The DataMixture job: check inputs, scan (pass 1), plan, build (pass 2), finish, commit.

Both passes are Ray Data maps over input files; the driver only merges integer statistics,
packs the per-file trailing partial chunks and the validation documents in file order, and
writes the manifest last. The output depends on the config alone: not on worker count,
block size, batch size or arrival order.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass, field
from typing import Any

from longreach.contract.datamixture import (
    CONTRACT,
    DataMixtureSpec,
    MixtureJobConfig,
    MixtureProgress,
    MixtureReport,
    MixtureResult,
)
from longreach.contract.errors import InputError
from longreach.contract.ownership import Lease
from longreach.contract.report import ReportWriter
from longreach.contract.storage import (
    filesystem,
    join,
    read_json_if_exists,
    write_bytes,
    write_json,
)
from longreach.jobs.entry import claim
from longreach.jobs.mixture.manifest import build_manifest, plot_png
from longreach.jobs.mixture.output import finish, finished_manifest
from longreach.jobs.mixture.raymap import RunOptions, connect_ray, ray_map, unwrap
from longreach.jobs.mixture.readers import FileUnit, check_first_record, list_files
from longreach.jobs.mixture.selection import (
    DomainStats,
    Scorer,
    group_files,
    make_plan,
    merge_stats,
)
from longreach.jobs.mixture.tokenizer import TokenizerInfo, tokenizer_info
from longreach.jobs.mixture.units import BuildSettings, build_unit, scan_unit, unit_name

log = logging.getLogger("longreach.mixture")


@dataclass
class Context:
    spec: DataMixtureSpec
    options: RunOptions
    report: ReportWriter[MixtureReport]
    lease: Lease
    units: list[FileUnit] = field(default_factory=list)
    state: dict[str, Any] = field(default_factory=dict)

    @property
    def out(self) -> str:
        return self.spec.output.uri

    @property
    def work(self) -> str:
        return join(self.spec.output.uri, "_work")


def check_inputs(ctx: Context) -> TokenizerInfo:
    """Every cheap check before the expensive work: tokenizer, sources, first records."""
    storage, strategy = ctx.spec.storage, ctx.spec.strategy
    if strategy.type == "upsample-domains" and sum(strategy.domainShares.values()) > 1:
        raise InputError(
            f"strategy.domainShares: the upsampled domains' shares sum to "
            f"{sum(strategy.domainShares.values()):.3f}, over 1; lower them"
        )
    tokenizer = tokenizer_info(ctx.spec.tokenizer, storage)
    for i, source in enumerate(ctx.spec.sources):
        files = list_files(i, source, storage)
        check_first_record(files[0], source, storage)
        ctx.units.extend(files)
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
        ctx.report.running(
            f"scanning: {done}/{len(units)} files",
            force=False,
            progress=MixtureProgress(
                documentsRead=records, percent=round(30 * done / len(units), 2)
            ),
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
        ctx.report.running(
            f"tokenizing and packing: {done_files}/{len(units)} files",
            force=False,
            progress=MixtureProgress(
                documentsRead=ctx.state["records"],
                tokensWritten=sum(s["chunks"] for s in summaries.values())
                * settings.sequence_length,
                percent=round(30 + 65 * done_files / len(units), 2),
            ),
        )
    return [summaries[g] for g in range(len(groups))]


def result_of(manifest: dict[str, Any], uri: str) -> MixtureResult:
    """The job's result, from a manifest."""
    return MixtureResult(
        uri=uri,
        tokens=manifest["tokens"],
        chunks=manifest["chunks"],
        domainShares=manifest["domainShares"]["after"],
        longDocumentTokenFraction=manifest["longDocumentTokenFraction"]["after"],
    )


def succeeded(ctx: Context, manifest: dict[str, Any], message: str) -> None:
    ctx.report.succeeded(
        message,
        progress=MixtureProgress(
            documentsRead=manifest["documents"]["read"],
            tokensWritten=manifest["tokens"],
            percent=100,
        ),
        result=result_of(manifest, ctx.out),
    )


def run(config: MixtureJobConfig, options: RunOptions | None = None) -> dict[str, Any]:
    """Build the mixture; returns the manifest. Raises InputError (OwnershipError is one) or
    the storage error, after reporting it in progress.json."""
    spec = config.spec
    options = options or RunOptions()
    writer = ReportWriter(
        spec.output.uri, spec.storage, MixtureReport(), interval=options.progress_interval
    )
    with claim(config, writer, marker=CONTRACT.marker) as lease:
        try:
            return _run(Context(spec, options, writer, lease))
        except Exception as exc:  # Ray wraps our errors: raise the user's own
            err = unwrap(exc)
            if err is not exc:
                raise err from None
            raise


def _run(ctx: Context) -> dict[str, Any]:
    spec, storage = ctx.spec, ctx.spec.storage
    done = finished_manifest(spec)
    if done is not None:
        succeeded(ctx, done, "already built with this config")
        return done
    ctx.report.running("checking inputs")
    tokenizer = check_inputs(ctx)
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
    ctx.lease.check()  # never commit an output another writer has taken over
    write_json(join(ctx.out, "manifest.json"), manifest, storage)
    ctx.lease.finish()
    warned = (
        f"; {len(notes['warnings'])} warnings, first: {notes['warnings'][0]}"
        if notes["warnings"]
        else ""
    )
    succeeded(
        ctx, manifest, f"wrote {manifest['chunks']} chunks of {spec.sequenceLength} tokens{warned}"
    )
    _clean(ctx)
    return manifest


def _clean(ctx: Context) -> None:
    """Remove the scratch files once the manifest is committed (they are only for resuming)."""
    fs, path = filesystem(ctx.work, ctx.spec.storage)
    with contextlib.suppress(FileNotFoundError):
        fs.rm(path, recursive=True)
