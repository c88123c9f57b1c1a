"""`lifelong-moe`: parses the command line and calls the library. User errors: one line, exit code 2."""

from __future__ import annotations

import argparse
import os
import sys


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lifelong-moe", description="Lifelong multimodal learning with growing Mixture-of-Experts.")
    sub = p.add_subparsers(dest="command", required=True, metavar="{run,compare,validate,list}")
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
    v = sub.add_parser("validate", help="check a config and build its stream; trains nothing",
                       description="Load CONFIG, check every key and value, build the stream and print its experiences.")
    v.add_argument("config")
    v.add_argument("overrides", nargs="*", metavar="key=value")
    sub.add_parser("list", help="list registered data sources, models, strategies and encoders",
                   description="List the registered components that configs can name.")
    return p


def main(argv: list[str] | None = None) -> int:
    from lifelong_moe.offline import hf_offline

    hf_offline()  # before anything imports huggingface_hub: nothing is downloaded at run time
    args = _parser().parse_args(argv)
    from lifelong_moe.errors import UserError  # imported after parsing: `--help` need not load torch and Avalanche

    try:
        return _dispatch(args)
    except UserError as err:
        print(f"lifelong-moe: error: {err}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # output piped into e.g. `head`
        sys.stdout = open(os.devnull, "w")
        return 0
    except KeyboardInterrupt:
        print("lifelong-moe: interrupted", file=sys.stderr)
        return 130


def _dispatch(args: argparse.Namespace) -> int:
    import lifelong_moe as lm

    if args.command == "list":
        for title, table in lm.registered_components().items():
            print(f"{title}:")
            for name, doc in table.items():
                print(f"  {name:<20} {doc}")
        return 0
    cfg = lm.load_config(args.config, args.overrides)
    if args.command == "validate":
        from lifelong_moe.features import build_experiment_stream

        stream = build_experiment_stream(cfg)  # sources loaded, pretrained features computed or read
        print(f"{args.config}: valid ({stream.scenario.value}, {len(stream.experiences)} experiences, {stream.n_classes} classes)")
        print(stream.describe())
        return 0
    if args.command == "compare":
        from lifelong_moe.compare import compare

        compare(cfg, [s.strip() for s in args.strategies.split(",") if s.strip()], args.seeds)
        return 0
    lm.run(cfg, resume=args.resume)
    return 0


if __name__ == "__main__":
    sys.exit(main())
