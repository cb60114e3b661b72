"""The DataMixture job: check inputs, scan (pass 1), plan, build (pass 2), fill, commit.

Both passes map over input files (with Ray Data, or in this process for small work: see
raymap.py); the driver only merges integer statistics, settles each domain's band documents
(fill.py), packs the groups' trailing partial chunks, those band documents and the validation
documents in group order, and writes the manifest last. The output depends on the config
alone: not on worker count, block size, batch size, arrival order or where the maps ran.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass, field
from typing import Any

from longreach.contract.datamixture import (
    CONTRACT,
    DataMixtureSpec,
    KeepProbability,
    LongDocumentShares,
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
from longreach.jobs.mixture.fill import Fill, band_documents, decide
from longreach.jobs.mixture.manifest import build_manifest, plot_png
from longreach.jobs.mixture.output import carry_indexes, finish, finished_manifest
from longreach.jobs.mixture.plan import MARGIN, Plan, group_files, make_plan
from longreach.jobs.mixture.raymap import (
    COMPRESSION,
    LOCAL_BUILD_TOKENS,
    LOCAL_SCAN_BYTES,
    RunOptions,
    map_units,
    unwrap,
)
from longreach.jobs.mixture.readers import FileUnit, check_first_record, list_files
from longreach.jobs.mixture.selection import (
    DomainStats,
    OrderHistogram,
    Scorer,
    merge_orders,
    merge_stats,
)
from longreach.jobs.mixture.tokenizer import TokenizerInfo, tokenizer_info
from longreach.jobs.mixture.units import (
    BuildSettings,
    build_unit,
    lines_uri,
    scan_unit,
    unit_name,
)

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


Scan = tuple[dict[str, DomainStats], dict[str, OrderHistogram]]


def scan(ctx: Context, scorer: Scorer, tokenizer: TokenizerInfo) -> Scan:
    """Pass 1 (or its saved result): per-domain statistics and order histograms; fails on too
    many corrupt lines."""
    spec, storage = ctx.spec, ctx.spec.storage
    saved = read_json_if_exists(join(ctx.work, "scan.json"), storage)
    if saved is not None:
        ctx.state.update(
            records=saved["records"], corrupt=saved["corrupt"], file_tokens=saved["fileTokens"]
        )
        return _parse_scan(saved)
    units, out = ctx.units, ctx.out  # the closure below goes to Ray: no ctx (its lease locks)
    stats: dict[str, DomainStats] = {}
    orders: dict[str, OrderHistogram] = {}
    records = corrupt = 0
    examples: list[str] = []
    file_tokens: list[dict[str, int]] = [{} for _ in units]

    def one(i: int) -> dict[str, Any]:
        source, record = spec.sources[units[i].source], lines_uri(out, i)
        return {"file": i, **scan_unit(units[i], source, storage, scorer, tokenizer, record)}

    size = sum(u.size * COMPRESSION.get(u.format, 1) for u in units)
    parts = map_units(list(range(len(units))), one, ctx.options, small=size <= LOCAL_SCAN_BYTES)
    for done, part in enumerate(parts, start=1):
        file_tokens[part["file"]] = part["tokens"]
        stats_part, orders_part = _parse_scan(part)
        merge_stats(stats, stats_part)
        merge_orders(orders, orders_part)
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
    ctx.state.update(records=records, corrupt=corrupt, file_tokens=file_tokens)
    write_json(
        join(ctx.work, "scan.json"),
        {
            "records": records,
            "corrupt": corrupt,
            "fileTokens": file_tokens,
            "stats": {d: s.to_json() for d, s in stats.items()},
            "order": {d: o.to_json() for d, o in orders.items()},
        },
        storage,
    )
    return stats, orders


def _parse_scan(obj: dict[str, Any]) -> Scan:
    return (
        {d: DomainStats.from_json(s) for d, s in obj["stats"].items()},
        {d: OrderHistogram.from_json(o) for d, o in obj["order"].items()},
    )


def build(ctx: Context, settings: BuildSettings, plan: Plan) -> list[dict[str, Any]]:
    """Pass 2 over the file groups not done yet; every group's summary in group order."""
    storage, units, sources = ctx.spec.storage, ctx.units, ctx.spec.sources
    groups = group_files(ctx.state["file_tokens"], settings.plans, settings.sequence_length)
    summaries: dict[int, dict[str, Any]] = {}
    for g in range(len(groups)):
        saved = read_json_if_exists(join(ctx.work, f"{unit_name(g)}.json"), storage)
        if saved is not None:
            summaries[g] = saved
    todo = [g for g in range(len(groups)) if g not in summaries]

    def one(g: int) -> dict[str, Any]:
        files = [(i, units[i], sources[units[i].source]) for i in groups[g]]
        return build_unit(g, files, settings)

    tokens = sum(p.budget * (1 + 2 * MARGIN) + p.validation_planned for p in plan.domains.values())
    small = tokens <= LOCAL_BUILD_TOKENS
    for summary in map_units(todo, one, ctx.options, small=small):
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
    long = manifest["longDocumentTokenFraction"]
    return MixtureResult(
        uri=uri,
        tokens=manifest["tokens"],
        chunks=manifest["chunks"],
        domainShares=manifest["domainShares"]["after"],
        targetShares=manifest["domainShares"]["target"],
        longDocumentTokenFraction=long["byEstimate"]["after"],
        longDocumentShare=LongDocumentShares.model_validate(
            {k: long[k] for k in ("byEstimate", "byTokenizer")}
        ),
        keepProbability={
            d: KeepProbability.model_validate(row["keepProbability"])
            for d, row in manifest["domains"].items()
        },
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
        warnings=manifest["warnings"],
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
    scorer = Scorer.from_spec(spec)
    before, orders = scan(ctx, scorer, tokenizer)
    plan = make_plan(spec, before, orders)
    for warning in plan.warnings:
        log.warning("%s", warning)
    ctx.report.running("planned", force=False, warnings=plan.warnings)
    settings = BuildSettings(
        scorer=scorer,
        plans=plan.domains,
        tokenizer=tokenizer,
        sequence_length=spec.sequenceLength,
        cut_tokens=spec.strategy.cutTokens if spec.strategy.type == "cut" else None,
        output_uri=ctx.out,
        storage=storage,
        batch_size=ctx.options.batch_size,
    )
    summaries = build(ctx, settings, plan)
    return _commit(ctx, tokenizer, scorer, before, plan, summaries)


def _commit(
    ctx: Context,
    tokenizer: TokenizerInfo,
    scorer: Scorer,
    before: dict[str, DomainStats],
    plan: Plan,
    summaries: list[dict[str, Any]],
) -> dict[str, Any]:
    """Settle the bands, pack the driver's last shards, the plots, then the manifest; then
    report success."""
    spec, storage = ctx.spec, ctx.spec.storage
    after: dict[str, DomainStats] = {}
    top_coin: dict[str, int] = {}
    for s in summaries:
        merge_stats(after, {d: DomainStats.from_json(x) for d, x in s["after"].items()})
        for d, c in s["topCoin"].items():
            top_coin[d] = max(top_coin.get(d, -1), int(c))
    band = band_documents(carry_indexes(spec, len(summaries)))
    fill = decide(plan, spec.totalTokens, after, top_coin, band, scorer)
    finished = finish(spec, summaries, fill.taken)
    counts = {
        **finished["counts"],
        "documents": {"read": ctx.state["records"], "corrupt": ctx.state["corrupt"]},
    }
    warnings = [*plan.warnings, *fill.warnings, *_shortfall(spec, fill, counts["tokens"])]
    manifest = build_manifest(
        spec=spec,
        config=ctx.lease.config,  # what owner.json records: one config, one hash
        config_hash=ctx.lease.digest,
        tokenizer=tokenizer.manifest(),
        before=before,
        after=after,
        plan=plan,
        fill=fill,
        shards=finished["shards"],
        counts=counts,
        warnings=warnings,
    )
    manifest["validationChunksPerDomain"] = finished["validationDomains"]
    for name in ("domains", "lengths"):
        write_bytes(join(ctx.out, f"{name}.png"), plot_png(manifest, name), storage)
    ctx.lease.check()  # never commit an output another writer has taken over
    write_json(join(ctx.out, "manifest.json"), manifest, storage)
    ctx.lease.finish()
    warned = f"; {len(warnings)} warnings, first: {warnings[0]}" if warnings else ""
    succeeded(
        ctx, manifest, f"wrote {manifest['chunks']} chunks of {spec.sequenceLength} tokens{warned}"
    )
    _clean(ctx)
    return manifest


def _shortfall(spec: DataMixtureSpec, fill: Fill, written: int) -> list[str]:
    """The warning for a total smaller than totalTokens: which data ran out, and what the
    mixture holds instead."""
    if fill.short is None:
        return []
    fix = "or set strategy.shortfall: fail to stop instead"
    if not fill.short:
        return [
            f"the corpus holds {fill.available:,} tokens, less than totalTokens "
            f"{spec.totalTokens:,}: all of it is used; the mixture has {written:,} tokens; "
            f"add data, {fix}"
        ]
    share = fill.available / fill.total if fill.total else 0.0
    return [
        f"domain {fill.short} has {fill.available:,} tokens (all of it, validation aside), less "
        f"than its share {share:.3f} of totalTokens {spec.totalTokens:,}; to keep every "
        f"domain's share the mixture has {written:,} tokens; add data for {fill.short}, {fix}"
    ]


def _clean(ctx: Context) -> None:
    """Remove the scratch files once the manifest is committed (they are only for resuming)."""
    fs, path = filesystem(ctx.work, ctx.spec.storage)
    with contextlib.suppress(FileNotFoundError):
        fs.rm(path, recursive=True)
