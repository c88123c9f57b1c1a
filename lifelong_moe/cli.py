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
    sub = p.add_subparsers(dest="command", required=True, metavar="{run,compare,validate,list}", parser_class=_Parser)
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
                                   "value, the stream and its data files, the model grown through every experience, "
                                   "the strategy and the Trainer settings. Writes nothing.")
    v.add_argument("config")
    v.add_argument("overrides", nargs="*", metavar="key=value")
    sub.add_parser("list", help="list registered data sources, models, strategies and encoders",
                   description="List the registered components that configs can name.")
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


_VALUED = ("--resume", "--strategies", "--seeds")


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

    # torch, Lightning and their C++ extensions import in this block (the registries load them): a signal
    # raised while C++ code runs Python (pybind11) can abort the process, so it waits for the block to end
    with deferred():
        if args.command == "list":
            tables = lm.registered_components()
        else:
            cfg = lm.load_config(args.config, args.overrides)
            import lifelong_moe.runner
    if args.command == "list":
        for title, table in tables.items():
            print(f"{title}:")
            for name, doc in table.items():
                print(f"  {name:<20} {doc}")
        return 0
    if args.command == "validate":
        from lifelong_moe.preparation import prepare

        ready = prepare(cfg)  # sources loaded, pretrained features computed or read, model rehearsed
        stream = ready.stream
        print(f"{args.config}: valid ({stream.scenario.value}, {len(stream.experiences)} experiences, {stream.n_classes} classes)")
        print(stream.describe())
        print(f"model {cfg.model.name}: {ready.grown['total']:,} parameters after the last experience "
              f"({ready.grown['trainable']:,} trainable); strategy {cfg.strategy.name}; trainer settings accepted")
        return 0
    if args.command == "compare":
        from lifelong_moe.compare import compare

        compare(cfg, [s.strip() for s in args.strategies.split(",") if s.strip()], args.seeds)
        return 0
    lm.run(cfg, resume=args.resume)
    return 0


if __name__ == "__main__":
    sys.exit(main())
