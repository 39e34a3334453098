"""`lookalike`: the command line of the production processes and operator tools."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lookalike.reindex import FailureBudget
    from models.dataset.dataset import DatasetOptions
    from models.settings import BrokerSettings, ModelSettings


def _cmd_worker(args: argparse.Namespace) -> int:
    from stream.__main__ import main as worker_main

    worker_main()
    return 0


def _cmd_api(args: argparse.Namespace) -> int:
    from query.serve import run_api
    from query.settings import ApiSettings

    overrides = {k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
    run_api(ApiSettings(**overrides))
    return 0


def _cmd_dev(args: argparse.Namespace) -> int:
    try:
        from lookalike.dev import DevOptions, run

        options = DevOptions(
            data=args.data,
            host=args.host,
            port=args.port,
            broker=args.broker,
            qdrant_url=args.qdrant_url,
            demo=args.demo,
            demo_size=args.demo_size,
            demo_seed=args.demo_seed,
        )
        return run(options)
    except KeyboardInterrupt:
        # Ctrl-C before the stack installed its own handler (while importing): nothing to stop.
        return 130


def _cmd_stats(args: argparse.Namespace) -> int:
    import json

    from lookalike.stats import format_stats, gather_stats, stats_failed
    from models.settings import BrokerSettings, ModelSettings, StoreSettings
    from stream.settings import StreamSettings

    broker = BrokerSettings()
    if args.broker is not None:
        broker = broker.model_copy(update={"broker": args.broker})
    stats = gather_stats(
        StoreSettings(),
        ModelSettings(),
        broker,
        args.group or StreamSettings().group_id,
        with_lag=args.lag,
    )
    print(json.dumps(stats, indent=2) if args.json else format_stats(stats))
    failed = stats_failed(stats)
    if failed is not None:
        print(f"stats: {failed}", file=sys.stderr)
        return 1
    return 0


def _cmd_schema(args: argparse.Namespace) -> int:
    import json

    from models.schema import schema_for

    print(json.dumps(schema_for(args.kind), indent=2))
    return 0


def _cmd_reindex(args: argparse.Namespace) -> int:
    import asyncio

    from lookalike.reindex import NothingToDo, ReindexError, reindex
    from models.settings import FetchSettings, ImageSettings, ModelSettings, StoreSettings

    try:
        result = asyncio.run(
            reindex(
                StoreSettings(),
                ModelSettings(),
                FetchSettings(),
                ImageSettings(),
                swap=args.swap,
                max_failed=args.max_failed,
            )
        )
    except NothingToDo as exc:
        print(f"reindex: {exc}")
        return 0
    except ReindexError as exc:
        print(f"reindex: {exc}", file=sys.stderr)
        return 1
    print(
        f"{result.source} -> {result.target}: {result.listings} listings, {result.images} images, "
        f"{len(result.failed)} failed; alias {'moved' if result.swapped else 'unchanged'}"
    )
    return 0


def _broker_address(args: argparse.Namespace) -> tuple[str, BrokerSettings]:
    from models.settings import BrokerSettings

    broker = BrokerSettings()
    return args.broker or broker.broker, broker


def _cmd_backfill(args: argparse.Namespace) -> int:
    import asyncio

    from lookalike.backfill import BackfillError, backfill, load_vectors
    from lookalike.publish import file_format, format_bad, validate
    from models.network import CheckpointError, load_model
    from models.settings import ModelSettings, StoreSettings
    from models.store.types import StoreError

    try:
        batch = validate(args.file, file_format(args.file, args.format))
    except (OSError, UnicodeDecodeError) as exc:
        print(f"backfill: cannot read {args.file}: {exc}", file=sys.stderr)
        return 1
    if batch.bad:
        print(format_bad(args.file, batch.bad), file=sys.stderr)
        print(f"backfill: {len(batch.bad)} bad lines; nothing was written", file=sys.stderr)
        return 2
    model = ModelSettings()
    try:
        net = load_model(model.model_name, model.model_checkpoint)
        vectors = load_vectors(args.vectors)
        result = asyncio.run(
            backfill(
                batch,
                vectors,
                StoreSettings(),
                net.model_id,
                net.dim,
                optimize=not args.no_optimize,
                grouping=not args.no_grouping,
            )
        )
    except (BackfillError, CheckpointError) as exc:
        print(f"backfill: {exc}", file=sys.stderr)
        return 2
    except StoreError as exc:
        print(f"backfill: the store failed: {exc}", file=sys.stderr)
        return 1
    print(
        f"backfill: {result.written} upserts and {result.tombstoned} removals into "
        f"{net.model_id}'s collection in {result.seconds:.1f} s ({result.per_second:.0f}/s); "
        "each changed a listing only where it was newer than the index"
    )
    if result.optimize_seconds is not None:
        print(f"backfill: search index built in {result.optimize_seconds:.1f} s")
    return 0


def _cmd_publish(args: argparse.Namespace) -> int:
    from confluent_kafka import KafkaException

    from lookalike.publish import file_format, format_bad, send, validate
    from stream.broker import BrokerError, BrokerUnreachable
    from stream.publisher import PublishError

    bootstrap, broker = _broker_address(args)
    topic = args.topic or broker.topic
    try:
        batch = validate(args.file, file_format(args.file, args.format))
    except (OSError, UnicodeDecodeError) as exc:
        print(f"publish: cannot read {args.file}: {exc}", file=sys.stderr)
        return 1
    if batch.bad:
        print(format_bad(args.file, batch.bad), file=sys.stderr)
        if not args.skip_invalid:
            print(
                f"publish: {len(batch.bad)} bad lines in {args.file}; nothing was sent "
                "(--skip-invalid sends the valid ones)",
                file=sys.stderr,
            )
            return 2
    try:
        sent = send(
            batch.events,
            bootstrap,
            topic,
            broker.topic_partitions,
            security=broker.client_security(),
        )
    except (BrokerUnreachable, BrokerError, PublishError, KafkaException) as exc:
        print(f"publish: {exc}", file=sys.stderr)
        return 1
    skipped = f", {len(batch.bad)} bad lines skipped" if batch.bad else ""
    print(f"published {sent} events to {topic} at {bootstrap}{skipped}", file=sys.stderr)
    return 0


def _cmd_dlq(args: argparse.Namespace) -> int:
    import json

    from lookalike import dlq
    from stream.broker import BrokerError, BrokerUnreachable
    from stream.publisher import PublishError

    bootstrap, broker = _broker_address(args)
    try:
        since = dlq.parse_since(args.since) if getattr(args, "since", None) else None
        filters = dlq.Filters(reason=getattr(args, "reason", None), since=since)
        if args.dlq_command == "replay":
            report = dlq.replay(bootstrap, broker, filters, dry_run=args.dry_run)
            verb = "would replay" if report.dry_run else "replayed"
            print(
                f"{verb} {len(report.replayed)} dead letters to {broker.topic} "
                f"({report.already} replayed before, {report.left_out} left out by the filters)"
            )
            return 0
        letters = dlq.read_dead_letters(bootstrap, broker)
        done = dlq.replayed(bootstrap, broker)
        if args.dlq_command == "show":
            letter = dlq.find(letters, args.offset)
            if letter is None:
                print(f"dlq: no dead letter at offset {args.offset} of {broker.dlq_topic}")
                return 1
            ref = f"{letter.partition}:{letter.offset}"
            print(json.dumps(letter.as_json(ref in done), indent=2, ensure_ascii=False))
            return 0
        shown = [x for x in letters if filters.match(x)]
        if args.json:
            rows = [x.as_json(f"{x.partition}:{x.offset}" in done) for x in shown]
            print(json.dumps(rows, indent=2, ensure_ascii=False))
        else:
            print(dlq.format_list(shown, done))
        return 0
    except ValueError as exc:
        print(f"dlq: {exc}", file=sys.stderr)
        return 2
    except (BrokerUnreachable, BrokerError, PublishError) as exc:
        print(f"dlq: {exc}", file=sys.stderr)
        return 1


def _cmd_alias(args: argparse.Namespace) -> int:
    import asyncio

    from lookalike.alias import AliasError, format_state, set_alias, show
    from models.settings import StoreSettings

    settings = StoreSettings()
    try:
        if args.alias_command == "set":
            state = asyncio.run(set_alias(settings, args.collection))
        else:
            state = asyncio.run(show(settings))
    except AliasError as exc:
        print(f"alias: {exc}", file=sys.stderr)
        return 1
    if args.alias_command == "set" and not state.moved:
        print(f"alias: nothing to do: {state.alias} already points at {state.target}")
        return 0
    if args.alias_command == "set":
        print(
            f"alias {state.alias}: {state.previous or '(unset)'} -> {state.target}; workers and "
            "the API serve their own model's collection: run them on its model"
        )
    print(format_state(state))
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    import json

    from lookalike.evaluation import EvalOptions, format_report, run_eval
    from models.network import CheckpointError
    from models.settings import ModelSettings

    model = ModelSettings()
    if args.model is not None:
        model = model.model_copy(update={"model_checkpoint": args.model})
    if args.data is not None:
        return _eval_data(args, model)
    if args.compare is not None or args.report is not None:
        print("eval: --compare and --report need --data", file=sys.stderr)
        return 2
    options = EvalOptions(
        items=args.items,
        seed=args.seed,
        split=args.split,
        workers=args.workers,
        progress=not args.json,
    )
    try:
        report = run_eval(model, options)
    except (CheckpointError, FileNotFoundError) as exc:
        print(f"eval: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(report.as_json(), indent=2) if args.json else format_report(report))
    return 0


def _eval_data(args: argparse.Namespace, model: ModelSettings) -> int:
    import json

    from lookalike.evaluation import DataEvalOptions, data_json, format_data_report, run_eval_data
    from models.dataset.dataset import InvalidDatasetError
    from models.evaluation.page import write_report
    from models.images import ImageLimits
    from models.network import CheckpointError
    from models.settings import FetchSettings, ImageSettings

    images = ImageSettings()
    compare = None
    if args.compare is not None:
        checkpoint = None if args.compare == "imagenet" else Path(args.compare)
        compare = model.model_copy(update={"model_checkpoint": checkpoint})
    try:
        data = _dataset_options(args, model.model_checkpoint)
        assert data is not None
        options = DataEvalOptions(
            data=data, split=args.split, workers=args.workers, progress=not args.json
        )
        dataset, evaluation = run_eval_data(model, compare, options, FetchSettings(), images)
    except InvalidDatasetError as exc:
        return _dataset_failed("eval", exc)
    except (CheckpointError, ValueError, OSError) as exc:
        print(f"eval: {exc}", file=sys.stderr)
        return 1
    if dataset.skipped:
        lines = len({b.lineno for b in dataset.skipped})
        print(f"eval: skipped {lines} lines with problems (--skip-invalid)", file=sys.stderr)
    if args.report is not None:
        page = write_report(
            args.report,
            evaluation.report,
            evaluation.compare,
            dataset.split(args.split),
            ImageLimits.from_settings(images),
            title=f"lookalike eval: {args.data}",
        )
        print(f"report: {page}", file=sys.stderr)
    print(
        json.dumps(data_json(evaluation), indent=2) if args.json else format_data_report(evaluation)
    )
    _attach_to_training_run(model.model_checkpoint, data_json(evaluation), args)
    return 0


def _attach_to_training_run(
    checkpoint: Path | None, metrics: dict[str, object], args: argparse.Namespace
) -> None:
    """An eval of a checkpoint that `train` recorded in MLflow joins that run (metrics, report)."""
    from models.training.checkpoint import checkpoint_metadata

    if checkpoint is None:
        return
    run_id = checkpoint_metadata(checkpoint).get("mlflow_run_id")
    if not isinstance(run_id, str):
        return
    try:
        from models.training.tracking import attach_eval
    except ImportError:  # MLflow is in the training extra
        return
    try:
        attached = attach_eval(run_id, metrics, args.report, args.split)
    except Exception as exc:  # a tracking server down must not lose the evaluation printed
        print(f"eval: not recorded in MLflow run {run_id}: {exc}", file=sys.stderr)
        return
    if attached:
        print(f"eval: recorded in MLflow run {run_id}", file=sys.stderr)


def _dataset_options(
    args: argparse.Namespace, checkpoint: Path | None = None
) -> DatasetOptions | None:
    """--data and its flags; an unset split falls back to the checkpoint's training split."""
    from models.dataset.dataset import DatasetOptions
    from models.training.checkpoint import checkpoint_metadata

    if args.data is None:
        return None
    trained = checkpoint_metadata(checkpoint) if checkpoint is not None else {}
    shares = args.split_shares or trained.get("split") or "0.7,0.1,0.2"
    seed = args.split_seed if args.split_seed is not None else trained.get("split_seed", 0)
    return DatasetOptions(
        manifest=args.data,
        cache=args.cache,
        split=str(shares),
        split_seed=int(seed),
        skip_invalid=args.skip_invalid,
    )


def _dataset_failed(command: str, exc: Exception) -> int:
    """The message and exit status of a dataset that cannot be used: 2 for bad lines."""
    from models.dataset.dataset import InvalidDatasetError
    from models.dataset.manifest import format_bad

    if isinstance(exc, InvalidDatasetError):
        print(format_bad(exc.path, exc.bad), file=sys.stderr)
        print(
            f"{command}: {len(exc.bad)} problems in {exc.path} (--skip-invalid goes on without "
            "them)",
            file=sys.stderr,
        )
        return 2
    print(f"{command}: {exc}", file=sys.stderr)
    return 1


def _cmd_train(args: argparse.Namespace) -> int:
    from lookalike.training import run_training
    from models.dataset.dataset import InvalidDatasetError
    from models.settings import FetchSettings, ImageSettings, ModelSettings
    from models.training.trainer import TrainConfig

    model = ModelSettings()
    data = _dataset_options(args)
    config = TrainConfig(
        out_dir=args.out,
        model_name=args.backbone or model.model_name,
        device=model.device,
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        backbone_lr=args.backbone_lr,
        projection_dim=args.projection_dim,
        train_from_block=args.train_from_block,
        item_weight=args.item_weight,
        catalog_items=args.items,
        catalog_seed=args.seed,
        seed=args.train_seed,
        workers=args.workers,
        data=None if data is None else str(data.manifest),
    )
    try:
        result = run_training(
            config,
            resume=args.resume,
            data=data,
            fetch=FetchSettings(),
            images=ImageSettings(),
            track=args.mlflow,
        )
    except InvalidDatasetError as exc:
        return _dataset_failed("train", exc)
    except (ValueError, OSError) as exc:
        print(f"train: {exc}", file=sys.stderr)
        return 1
    print(
        f"exported {result.checkpoint} (model_id {result.model_id}, best epoch "
        f"{result.best_epoch}); serve it with LOOKALIKE_MODEL_CHECKPOINT={result.checkpoint}"
    )
    return 0


def _cmd_dataset(args: argparse.Namespace) -> int:
    from models.dataset.demo import write_demo_dataset
    from models.evalset.catalog import build_eval_catalog

    if args.dataset_command == "fetch":
        return _dataset_fetch(args)
    catalog = build_eval_catalog(args.items, args.seed)
    manifest = write_demo_dataset(catalog, args.out, workers=args.workers, progress=True)
    listings = sum(len(item.listings) for item in catalog.items)
    print(f"wrote {manifest}: {listings} listings of {len(catalog.items)} items")
    return 0


def _dataset_fetch(args: argparse.Namespace) -> int:
    from models.dataset.dataset import InvalidDatasetError, load_dataset
    from models.network import variant
    from models.settings import FetchSettings, ImageSettings, ModelSettings

    data = _dataset_options(args)
    assert data is not None
    pre = variant(ModelSettings().model_name).preprocessing()
    try:
        dataset = load_dataset(data, FetchSettings(), ImageSettings(), pre, progress=True)
    except InvalidDatasetError as exc:
        return _dataset_failed("dataset", exc)
    except (ValueError, OSError) as exc:
        print(f"dataset: {exc}", file=sys.stderr)
        return 1
    splits = ", ".join(
        f"{name} {len(dataset.split(name))} listings ({dataset.photo_count(name)} photos)"
        for name in ("train", "val", "test")
    )
    skipped = len({b.lineno for b in dataset.skipped})
    print(
        f"{data.manifest}: {splits}; tasks {', '.join(dataset.tasks) or '(none)'}; "
        f"{dataset.fetched} photos fetched into {data.cache_dir}"
        + (f"; {skipped} lines with problems skipped" if skipped else "")
    )
    return 0


def _budget(text: str) -> FailureBudget:
    from lookalike.reindex import FailureBudget

    try:
        return FailureBudget.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not a positive number")
    return value


def build_parser() -> argparse.ArgumentParser:
    from models.network import VARIANTS
    from models.schema import SCHEMAS

    parser = argparse.ArgumentParser(
        prog="lookalike",
        description="Search by photo for marketplaces. Settings come from LOOKALIKE_* variables.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    worker = sub.add_parser("worker", help="run one indexer worker (Faust) against the broker")
    worker.set_defaults(func=_cmd_worker)

    api = sub.add_parser("api", help="run the query service")
    api.add_argument("--host", default=None, help="listen address (LOOKALIKE_HOST)")
    api.add_argument("--port", type=int, default=None, help="listen port (LOOKALIKE_PORT)")
    api.set_defaults(func=_cmd_api)

    dev = sub.add_parser(
        "dev",
        help="the embedded stack: broker, indexer, store, search API and a demo catalog",
        description="Everything in one process. Prints `search: URL` once it serves, and "
        "`broker: HOST:PORT` when it started its own broker. Ctrl-C stops it.",
    )
    dev.add_argument("--host", default="127.0.0.1", help="listen address of the search API")
    dev.add_argument("--port", type=int, default=8080, help="port of the search API (0: any)")
    dev.add_argument("--data", type=Path, default=Path("data"), help="index and demo photos")
    dev.add_argument(
        "--broker", default=None, help="use this Kafka-protocol broker instead of starting one"
    )
    dev.add_argument(
        "--qdrant-url", default=None, help="a Qdrant server instead of the embedded Qdrant Edge"
    )
    dev.add_argument(
        "--demo",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="publish a demo catalog (photos served from a loopback image server)",
    )
    dev.add_argument("--demo-size", type=_positive, default=200, help="listings in the demo")
    dev.add_argument("--demo-seed", type=int, default=7, help="seed of the demo catalog")
    dev.set_defaults(func=_cmd_dev)

    schema = sub.add_parser(
        "schema",
        help="print the JSON Schema of a published contract",
        description="`events`: the listing events on the listings topic (listing.upserted and "
        "listing.deleted), as the indexer validates them; also served at GET /v1/schema/events. "
        "`dataset`: one line of a dataset manifest (train --data, eval --data).",
    )
    schema.add_argument("kind", choices=sorted(SCHEMAS), help="which contract")
    schema.set_defaults(func=_cmd_schema)

    stats = sub.add_parser(
        "stats",
        help="collection size, model, alias target and the indexer group's lag",
        description="Exits 1, with one line, when the broker or the index cannot be read. Lag "
        "is measured to the log end read from the broker; a partition whose committed offset "
        "lies past that end (offsets of an older log) shows its lag as unknown.",
    )
    stats.add_argument("--broker", default=None, help="bootstrap servers (LOOKALIKE_BROKER)")
    stats.add_argument("--group", default=None, help="consumer group (LOOKALIKE_GROUP_ID)")
    stats.add_argument(
        "--lag",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="ask the broker for the consumer group's lag",
    )
    stats.add_argument("--json", action="store_true", help="print JSON")
    stats.set_defaults(func=_cmd_stats)

    reindex = sub.add_parser(
        "reindex",
        help="build the configured model's collection from the aliased one, then move the alias",
        description="Stop the workers first; start them on the new model afterwards.",
    )
    reindex.add_argument(
        "--swap",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="point the alias at the new collection when done",
    )
    reindex.add_argument(
        "--max-failed",
        type=_budget,
        default="1%",
        help="failure budget: listings that may fail (a share such as 1%%, or a count) before "
        "the alias is left where it was and reindex exits 1 (default 1%%)",
    )
    reindex.set_defaults(func=_cmd_reindex)

    alias = sub.add_parser(
        "alias",
        help="where the alias points, its collections (points, model ids); roll back or forward",
    )
    alias_sub = alias.add_subparsers(dest="alias_command", required=True)
    alias_sub.add_parser("show", help="the alias target and every collection of the alias")
    alias_set = alias_sub.add_parser(
        "set", help="point the alias at an existing collection (roll back or forward)"
    )
    alias_set.add_argument("collection", help="a collection name, or the model id it carries")
    alias.set_defaults(func=_cmd_alias)

    dlq = sub.add_parser(
        "dlq",
        help="list, show and replay dead letters",
        description="Dead letters keep the original key and value; replay republishes them to "
        "the listings topic, each dead letter at most once (recorded on <dlq topic>.replayed).",
    )
    dlq_sub = dlq.add_subparsers(dest="dlq_command", required=True)

    def dlq_filters(p: argparse.ArgumentParser) -> None:
        p.add_argument("--reason", default=None, help="only this dlq.reason")
        p.add_argument(
            "--since", default=None, help="only dead letters since: ISO 8601 time, or 30m, 2h, 7d"
        )
        p.add_argument("--broker", default=None, help="bootstrap servers (LOOKALIKE_BROKER)")

    dlq_list = dlq_sub.add_parser("list", help="one line per dead letter")
    dlq_filters(dlq_list)
    dlq_list.add_argument("--json", action="store_true", help="print a JSON array")
    dlq_show = dlq_sub.add_parser("show", help="one dead letter: headers, key and value")
    dlq_show.add_argument("offset", help="its offset (PARTITION:OFFSET beyond partition 0)")
    dlq_show.add_argument("--broker", default=None, help="bootstrap servers (LOOKALIKE_BROKER)")
    dlq_replay = dlq_sub.add_parser(
        "replay", help="republish dead letters not replayed before to the listings topic"
    )
    dlq_filters(dlq_replay)
    dlq_replay.add_argument(
        "--dry-run", action="store_true", help="say how many would be replayed; send nothing"
    )
    dlq.set_defaults(func=_cmd_dlq)

    def catalog_args(p: argparse.ArgumentParser) -> None:
        p.add_argument("--items", type=_positive, default=360, help="items in the eval catalog")
        p.add_argument("--seed", type=int, default=11, help="seed of the eval catalog")
        p.add_argument("--workers", type=_positive, default=None, help="render/decode processes")

    def data_args(p: argparse.ArgumentParser, shares_flag: str, default: str) -> None:
        p.add_argument(
            "--data",
            type=Path,
            default=None,
            metavar="MANIFEST",
            help="a dataset manifest, JSON lines (`lookalike schema dataset`); instead of the "
            "built-in catalog",
        )
        p.add_argument(
            "--cache",
            type=Path,
            default=None,
            metavar="DIR",
            help="where fetched photos are kept (default: a cache folder beside the manifest)",
        )
        p.add_argument(
            shares_flag,
            dest="split_shares",
            default=None,
            metavar="SHARES",
            help="train,val,test shares of the groups of lines without a split "
            f"(default{default}: 0.7,0.1,0.2)",
        )
        p.add_argument(
            "--split-seed",
            type=int,
            default=None,
            metavar="S",
            help=f"seed of the split by group (default{default}: 0)",
        )
        p.add_argument(
            "--skip-invalid",
            action="store_true",
            help="leave out bad lines and photos, and count them, instead of stopping",
        )

    evaluate = sub.add_parser(
        "eval",
        help="recall@k and mAP of buyer-photo->listing and listing->listing search",
        description="Indexes a split of the built-in evaluation catalog, or with --data of a "
        "dataset manifest, into a scratch Qdrant Edge store with the model and queries it.",
    )
    evaluate.add_argument(
        "--model",
        type=Path,
        default=None,
        help="a checkpoint from `lookalike train` "
        "(default: LOOKALIKE_MODEL_CHECKPOINT, else the ImageNet weights)",
    )
    evaluate.add_argument("--split", choices=["train", "val", "test"], default="test")
    evaluate.add_argument("--json", action="store_true", help="print one JSON object")
    evaluate.add_argument(
        "--compare",
        default=None,
        metavar="CKPT",
        help="with --data: a second checkpoint (or `imagenet`) scored on the same queries; "
        "adds its results and a delta column (model - compare)",
    )
    evaluate.add_argument(
        "--report",
        type=Path,
        default=None,
        metavar="DIR",
        help="with --data: write DIR/index.html, metrics and sample queries with thumbnails",
    )
    catalog_args(evaluate)
    data_args(evaluate, "--split-shares", ": the checkpoint's, else")
    evaluate.set_defaults(func=_cmd_eval)

    train = sub.add_parser(
        "train",
        help="multitask fine-tuning on product and buyer photos; exports a checkpoint",
        description="Validation retrieval after every epoch goes to OUT/train.jsonl; the best "
        "epoch is exported to OUT/model.pt with its own model_id.",
    )
    train.add_argument("--out", type=Path, default=Path("data/train"), help="run directory")
    train.add_argument(
        "--backbone",
        choices=sorted(VARIANTS),
        default=None,
        help="the ImageNet network to fine-tune (default LOOKALIKE_MODEL_NAME, "
        "efficientnet-lite0); serve the export with the same LOOKALIKE_MODEL_NAME",
    )
    train.add_argument("--epochs", type=_positive, default=8)
    train.add_argument("--batch-size", type=_positive, default=64)
    train.add_argument("--lr", type=float, default=3e-3, help="heads and projection")
    train.add_argument("--backbone-lr", type=float, default=3e-4, help="0 freezes the backbone")
    train.add_argument("--projection-dim", type=_positive, default=256)
    train.add_argument(
        "--train-from-block", type=int, default=11, help="earlier blocks stay frozen (0: none)"
    )
    train.add_argument("--item-weight", type=float, default=1.0, help="item-identity loss weight")
    train.add_argument("--train-seed", type=int, default=0)
    train.add_argument("--resume", action="store_true", help="continue from OUT/state.pt")
    train.add_argument(
        "--mlflow",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="record the run in MLflow (MLFLOW_TRACKING_URI, else ./mlflow.db)",
    )
    catalog_args(train)
    data_args(train, "--split", "")
    train.set_defaults(func=_cmd_train)

    dataset = sub.add_parser("dataset", help="datasets in the manifest format (train/eval --data)")
    dataset_sub = dataset.add_subparsers(dest="dataset_command", required=True)
    demo = dataset_sub.add_parser(
        "demo",
        help="write the built-in evaluation catalog as a dataset: OUT/manifest.jsonl, OUT/photos/",
        description="Each item is a group, its split pinned, so train/eval --data on it see the "
        "catalog's own split.",
    )
    demo.add_argument("out", type=Path, help="folder to write")
    catalog_args(demo)
    fetch = dataset_sub.add_parser(
        "fetch",
        help="check a manifest, fetch its URLs into the cache and decode every photo",
        description="What train and eval do first, alone: bad lines, missing files and "
        "undecodable photos are listed with their line numbers (exit 2).",
    )
    fetch.add_argument("data", type=Path, help="the manifest (JSON lines)")
    fetch.add_argument(
        "--cache", type=Path, default=None, help="where fetched photos are kept (MANIFEST/../cache)"
    )
    fetch.add_argument(
        "--split",
        dest="split_shares",
        default=None,
        help="train,val,test shares of the groups of lines without a split (default 0.7,0.1,0.2)",
    )
    fetch.add_argument("--split-seed", type=int, default=None, help="seed of the split (0)")
    fetch.add_argument("--skip-invalid", action="store_true", help="count bad lines, go on")
    dataset.set_defaults(func=_cmd_dataset)

    publish = sub.add_parser(
        "publish",
        help="publish listing events from a JSON-lines or CSV file, validated first",
        description="Every line is validated before anything is sent: with a bad line nothing "
        "is sent, and every bad line is listed with its number and reason.",
    )
    publish.add_argument("file", type=Path, help="one listing event per line (JSON lines or CSV)")
    publish.add_argument("--broker", default=None, help="bootstrap servers (LOOKALIKE_BROKER)")
    publish.add_argument("--topic", default=None, help="topic (LOOKALIKE_TOPIC)")
    publish.add_argument(
        "--format",
        choices=["jsonl", "csv"],
        default=None,
        help="file format (default: csv for a .csv file, else jsonl)",
    )
    publish.add_argument(
        "--skip-invalid", action="store_true", help="send the valid lines, list the bad ones"
    )
    publish.set_defaults(func=_cmd_publish)

    backfill = sub.add_parser(
        "backfill",
        help="write a catalog file and its vectors straight to the store, in bulk",
        description="For embeddings computed elsewhere with the served model: row i of the "
        "vectors file is the i-th photo of the file's upserts. Validated first, written with the "
        "indexer's payload and version guard.",
    )
    backfill.add_argument("file", type=Path, help="one listing event per line (JSON lines or CSV)")
    backfill.add_argument(
        "--vectors", type=Path, required=True, help="a .npy of float32 rows, one per photo"
    )
    backfill.add_argument(
        "--format",
        choices=["jsonl", "csv"],
        default=None,
        help="file format (default: csv for a .csv file, else jsonl)",
    )
    backfill.add_argument(
        "--no-grouping",
        action="store_true",
        help="write each listing as its own duplicate group, without the search that groups it "
        "(a bulk load's rate; the grouping search scans what is not yet indexed)",
    )
    backfill.add_argument(
        "--no-optimize",
        action="store_true",
        help="leave the search index unbuilt (the worker builds it after writes of its own)",
    )
    backfill.set_defaults(func=_cmd_backfill)
    return parser


def main(argv: Sequence[str] | None = None) -> None:
    from models.logs import LogSettings, configure_logging

    args = build_parser().parse_args(argv)
    configure_logging(LogSettings())
    sys.exit(args.func(args))


if __name__ == "__main__":
    main()
