"""`lifelong-moe`: parses the command line and calls the library. User errors: one line, exit code 2.
SIGINT and SIGTERM: one line saying where the run stopped and how to resume it, exit code 130 or 143."""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from typing import Any, NoReturn


class _Parser(argparse.ArgumentParser):
    """argparse, with its usage errors as one line like every other error."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"lifelong-moe: error: {message} (see `{self.prog} --help`)\n")


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="lifelong-moe", description="Lifelong multimodal learning with growing Mixture-of-Experts.")
    sub = p.add_subparsers(dest="command", required=True, metavar="{run,compare,validate,list,predict,report}", parser_class=_Parser)
    r = sub.add_parser("run", help="run a lifelong experiment", description="Train through the stream of CONFIG and write runs/<name>/<version>/.")
    r.add_argument("config", help="experiment YAML, e.g. configs/default.yaml")
    r.add_argument("overrides", nargs="*", metavar="key=value", help="OmegaConf dotlist overrides, e.g. train.epochs=2")
    r.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its last completed experience")
    c = sub.add_parser("compare", help="run several methods on one stream and tabulate them",
                       description="Run the MoE model and baselines on CONFIG's stream over several seeds; write "
                                   "comparison.md/.csv and plots under runs/<name>-compare/<version>/.")
    c.add_argument("config")
    c.add_argument("overrides", nargs="*", metavar="key=value")
    c.add_argument("--strategies", default="moe,naive,ewc,lwf,replay,joint",
                   help="comma-separated: moe, joint, or any registered strategy (see `list`); default %(default)s")
    c.add_argument("--seeds", type=int, default=3, help="seeds per method, from the config's seed on (default %(default)s)")
    v = sub.add_parser("validate", help="check a config, its stream, model, strategy and trainer; trains nothing",
                       description="Load CONFIG and check everything `run` checks before training: every key and "
                                   "value, the stream and its data files (class names resolved and printed), each "
                                   "pretrained encoder (weights loaded, a few samples encoded; the run encodes the rest), "
                                   "the model grown through every experience, the strategy and the Trainer settings. "
                                   "Writes no run (decoded files go to the cache, as in a run).")
    v.add_argument("config")
    v.add_argument("overrides", nargs="*", metavar="key=value")
    ls = sub.add_parser("list", help="list registered components; with a KIND, their parameters",
                       description="List the registered components that configs can name. With KIND (sources, models, "
                                   "strategies, encoders, modality-encoders, growth, communication), each one's parameters "
                                   "with their types, defaults and help; with NAME, that one only.")
    ls.add_argument("kind", nargs="?", help="sources, models, strategies, encoders, modality-encoders, growth or communication")
    ls.add_argument("name", nargs="?", help="one component of KIND, e.g. `list models moe`")
    pr = sub.add_parser("predict", help="apply a finished run's final model to new image or audio files",
                        description="Decode FILES (image or audio files, or folders of them) as the run's sources decoded "
                                    "theirs, pass them through its final model (from its checkpoint) and write one line per "
                                    "file: predicted class, its probability, and the experience the model routed it to.")
    pr.add_argument("run_dir", metavar="RUN_DIR", help="a completed run, e.g. runs/default/version_0")
    pr.add_argument("paths", nargs="+", metavar="FILES", help="image or audio files, or folders searched recursively")
    pr.add_argument("-o", "--output", default="predictions.csv",
                    help="CSV to write (default %(default)s); `-o -` writes it to standard output, and the progress "
                         "lines to standard error")
    pr.add_argument("--modality", help="the run's modality the files feed, where their kind fits several")
    rp = sub.add_parser("report", help="write one self-contained HTML page per run or comparison",
                        description="Write DIR/report.html for each run directory (results.json) or comparison directory "
                                    "(comparison.csv): metrics, accuracy matrix, forgetting curves, classes, routing, "
                                    "contributions and config, with every figure embedded (no network needed).")
    rp.add_argument("dirs", nargs="+", metavar="DIR", help="run or comparison directories")
    rp.add_argument("-o", "--output", help="where to write the page (one DIR only; default DIR/report.html)")
    return p


def main(argv: list[str] | None = None) -> int:
    from lifelong_moe.errors import Interrupted, UserError  # light: the package's heavy parts load on first use
    from lifelong_moe.interrupts import signals_raise
    from lifelong_moe.offline import hf_offline

    hf_offline()  # before anything imports huggingface_hub: nothing is downloaded at run time

    with signals_raise():
        try:
            try:
                args = _parser().parse_args(_options_first(sys.argv[1:] if argv is None else list(argv)))
            except SystemExit as done:  # --help, or a usage error already printed as one line
                return int(done.code or 0) if not isinstance(done.code, str) else 2
            return _dispatch(args)
        except UserError as err:
            print(f"lifelong-moe: error: {_one_line(err)}", file=sys.stderr)
            return 2
        except BrokenPipeError:  # output piped into e.g. `head`
            sys.stdout = open(os.devnull, "w")
            return 0
        except (Interrupted, KeyboardInterrupt) as err:
            stop = err if isinstance(err, Interrupted) else Interrupted()
            if _first_process():  # under DDP every rank was interrupted; rank 0 speaks for them
                print(f"lifelong-moe: {_stopped(stop, locals().get('args'))}", file=sys.stderr)
            return stop.exit_code


def _first_process() -> bool:
    """Rank 0 (or the only process), from the environment launchers set: nothing heavy to import here."""
    return all(os.environ.get(name, "0") in ("", "0") for name in ("RANK", "LOCAL_RANK", "NODE_RANK"))


_VALUED = ("--resume", "--strategies", "--seeds", "--output", "-o", "--modality")


def _options_first(argv: list[str]) -> list[str]:
    """Options that take a value moved right after the command, so that `run c.yaml --resume DIR a=1`
    works as `run c.yaml a=1 --resume DIR` does (argparse stops collecting overrides at an option)."""
    if not argv:
        return argv
    head, rest, moved = argv[:1], argv[1:], []
    out, i = [], 0
    while i < len(rest):
        token = rest[i]
        if token == "--":
            out += rest[i:]
            break
        if token in _VALUED and i + 1 < len(rest):
            moved += rest[i:i + 2]
            i += 2
            continue
        if token.startswith(tuple(f"{o}=" for o in _VALUED)):
            moved.append(token)
        else:
            out.append(token)
        i += 1
    return head + moved + out


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split("\n")).strip() or type(err).__name__


def _stopped(stop: Any, args: argparse.Namespace | None) -> str:
    """Where an interrupted command left things, and for a run the exact command that continues it."""
    head = f"interrupted by {stop.signal_name}"
    if stop.run_dir is None:
        return f"{head}; nothing was written"
    if not stop.kept:
        return f"{head} before the first experience finished; nothing was kept ({stop.run_dir} removed)"
    if stop.total == 0:  # compare: the finished runs stay where they are
        return f"{head}; the finished runs are kept in {stop.run_dir}"
    at = "during the final evaluation" if stop.completed >= stop.total else f"during experience {stop.completed + 1}/{stop.total}"
    command = ["lifelong-moe", "run", args.config, *args.overrides, "--resume", stop.run_dir] if args else []
    return (f"{head} {at}; {stop.run_dir} keeps {stop.completed} completed experience(s); resume with: "
            f"{shlex.join(command)}")


def _dispatch(args: argparse.Namespace) -> int:
    import lifelong_moe as lm
    from lifelong_moe.interrupts import deferred

    if args.command in ("list", "predict", "report"):
        return _tools(args)
    # torch, Lightning and their C++ extensions import in this block (the registries load them): a signal
    # raised while C++ code runs Python (pybind11) can abort the process, so it waits for the block to end
    with deferred():
        cfg = lm.load_config(args.config, args.overrides)
        import lifelong_moe.runner
    if args.command == "validate":
        from lifelong_moe.preparation import prepare

        ready = prepare(cfg, encode=False)  # sources loaded, encoders tried on a few samples, model rehearsed
        stream = ready.stream
        print(f"{args.config}: valid ({stream.scenario.value}, {len(stream.experiences)} experiences, {stream.n_classes} classes)")
        print(stream.describe())
        if stream.describe_classes():
            print(stream.describe_classes())
        print(f"model {cfg.model.name}: {ready.grown['total']:,} parameters after the last experience "
              f"({ready.grown['trainable']:,} trainable); strategy {cfg.strategy.name}; trainer settings accepted")
        return 0
    if args.command == "compare":
        from lifelong_moe.compare import compare

        compare(cfg, [s.strip() for s in args.strategies.split(",") if s.strip()], args.seeds)
        return 0
    lm.run(cfg, resume=args.resume)
    return 0


def _tools(args: argparse.Namespace) -> int:
    """`list`, `predict` and `report`: they read what exists and train nothing."""
    from lifelong_moe.interrupts import deferred

    if args.command == "list":
        from lifelong_moe import catalog

        with deferred():
            kinds = [catalog.canonical(args.kind)] if args.kind else list(catalog.KINDS)
            tables = {k: catalog.components(k) for k in kinds}
        for kind, table in tables.items():
            spec = catalog.KINDS[kind]
            if args.name is not None:
                catalog.registry(kind).get(args.name, f"list {kind}")
                table = {args.name: table[args.name]}
            print(f"{spec.title} ({spec.key}):")
            for name, doc in table.items():
                print(f"  {name:<20} {doc}")
                if args.kind and spec.has_params:
                    print(catalog.params_table(catalog.params_of(kind, name)))
        if not args.kind:
            print("\n`lifelong-moe list KIND` shows each one's parameters (types, defaults, help).")
        return 0
    if args.command == "predict":
        from lifelong_moe.predict import predict

        with deferred():
            import lifelong_moe.preparation  # noqa: F401  (torch and Lightning, imported before a signal may arrive)
        predict(args.run_dir, args.paths, args.output, args.modality)
        return 0
    from lifelong_moe.reporting.report import write_report

    if args.output is not None and len(args.dirs) > 1:
        from lifelong_moe.errors import ConfigError

        raise ConfigError("report: --output takes one DIR; without it each page goes to DIR/report.html")
    for d in args.dirs:
        print(f"[lifelong-moe] report: {write_report(d, args.output)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
