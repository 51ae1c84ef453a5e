"""`python -m training_bench`: micro-benchmarks of operators and communication, layer breakdowns, profiles.

User mistakes print one line naming the fix and exit 2.
"""

from __future__ import annotations

import argparse
import re
import sys
from typing import NoReturn

from scenarios.catalog import CatalogError
from training_bench.errors import BenchError
from training_bench.micro_cli import DTYPES, cmd_comm, cmd_layer, cmd_ops, cmd_profile
from training_bench.train_cli import add_output_argument, add_train_arguments, count


def _version() -> str:
    """The installed distribution's version (whatever the distribution is called)."""
    from importlib import metadata

    for dist in metadata.packages_distributions().get("training_bench", []):
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return "unknown (not installed)"


class Parser(argparse.ArgumentParser):
    """No abbreviated flags: argparse would take `--api-k` for `--api-key`, so a secret could be given under a name
    that no redaction knows, and a typo could silently select another flag."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def _ints(text: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give comma-separated integers, e.g. 1,2,4,8") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: give positive integers")
    return values


def _pairs(text: str) -> list[tuple[int, int]]:
    out = []
    for part in text.split(","):
        b, sep, c = part.partition("x")
        if not sep or not b.strip().isdigit() or not c.strip().isdigit():
            raise argparse.ArgumentTypeError(f"{part!r}: write BATCHxCONTEXT, e.g. 8x2048")
        out.append((int(b), int(c)))
    return out


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="7b", help="catalog model whose shapes are used (default 7b)")
    p.add_argument("--dtype", choices=sorted(DTYPES), help="element type (default bf16 on GPU, fp32 on CPU, where "
                                                            "bf16 matmuls run ~14x slower)")
    p.add_argument("--device", choices=["auto", "cuda", "cpu"], default="auto", help="default: cuda when available")
    p.add_argument("--warmup", type=count(0), help="untimed calls before timing (default 5 on GPU, 2 on CPU)")
    p.add_argument("--reps", type=count(1), help="timed repetitions per operator (default 30 on GPU, 5 on CPU)")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")
    add_output_argument(p, "write the results as JSON to this file")


def build_parser() -> Parser:
    parser = Parser(prog="python -m training_bench",
                    description="How fast LLMs train and fine-tune, and where the time goes: training runs with the "
                                "paper's optimizations, and operator and communication micro-benchmarks.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    sub.required = True
    from training_bench.train_cli import cmd_sweep, cmd_train

    pre = sub.add_parser("pretrain", help="pre-training steps of a catalog model: tokens/s, MFU, memory, phases",
                         description="Full-parameter training steps of a random-weight Llama-shaped model. Under "
                                     "torchrun the same command runs data parallel (DDP, FSDP2 or DeepSpeed ZeRO).")
    add_train_arguments(pre, finetune=False)
    pre.set_defaults(func=lambda a: cmd_train(a, "full"))
    fin = sub.add_parser("finetune", help="fine-tuning steps: LoRA, QLoRA (4-bit NF4 base) or full",
                         description="Fine-tuning steps: LoRA adapters (peft) on a bf16 base, QLoRA on a 4-bit NF4 "
                                     "base (bitsandbytes), or full fine-tuning.")
    add_train_arguments(fin, finetune=True)
    fin.set_defaults(func=cmd_train)
    sw = sub.add_parser("sweep", help="run a grid of training configurations, compare them, recommend the fastest",
                        description="Each combination runs in its own process; the table gives each option's "
                                    "time and memory relative to the first configuration and what each row ran; "
                                    "the last line names the fastest configuration that fits in memory. The results "
                                    "file is rewritten after every point.")
    add_train_arguments(sw, finetune=True)
    sw.set_defaults(method="full")
    grid = sw.add_argument_group("sweep")
    grid.add_argument("--vary", action="append", help="KEY=V1,V2 (repeatable; the grid is their product), e.g. "
                                                      "kernels=none,liger, compile=off,on, precision=bf16,fp8, "
                                                      "engine=hf,megatron, recompute=none,full, attn=eager,sdpa")
    grid.add_argument("--point", action="append", help="KEY=V,KEY=V (repeatable): one more configuration beside "
                                                       "the grid, e.g. engine=megatron,attn=sdpa")
    grid.add_argument("--like", metavar="FILE", help="start every point from the training path (attn, kernels, "
                                                     "compile) of the fastest HF bf16 row of this sweep result")
    grid.add_argument("--timeout", type=float, help="seconds one point may run before it is stopped (default none)")
    grid.add_argument("--gpu", help="catalog GPU to recommend for (rows measured on it, peak within its memory; "
                                    "default: the GPU the sweep ran on)")
    grid.add_argument("--from", dest="from_file", metavar="FILE", action="append",
                      help="run nothing: recommend from the rows of this sweep or training_matrix result "
                           "(repeatable: the rows of several files together)")
    sw.set_defaults(func=cmd_sweep)

    micro = sub.add_parser("micro", help="operator and communication micro-benchmarks",
                           description="Operators at a catalog model's shapes, collectives across torchrun's "
                                       "processes, one layer's module breakdown, and profiles for the simulated "
                                       "engine. On a CPU the defaults are small shapes and fp32.")
    msub = micro.add_subparsers(dest="what", metavar="WHAT", parser_class=Parser)
    msub.required = True

    ops = msub.add_parser("ops", help="every operator of a layer at the model's shapes (prefill and decode)",
                          description="Times each operator of one decoder layer (plus embedding and LM head) against "
                                      "the device's measured GEMM and copy ceilings; matrix operators are classified "
                                      "compute- or memory-bound by the roofline of those ceilings.")
    _common(ops)
    ops.add_argument("--only", default="gemm,attention,norm,rope,activation,softmax,embedding",
                     help="operator groups: gemm, attention, norm, rope, activation, softmax, embedding")
    ops.add_argument("--attn", default=None,
                     help="attention implementations to time (unavailable ones are reported as skipped; default "
                          "all five on GPU, eager,sdpa-math on CPU)")
    ops.add_argument("--prefill-batch", type=int, help="sequences per prefill (default 8 on GPU, 1 on CPU)")
    ops.add_argument("--seq-len", type=int, help="prefill sequence length (default 2048 on GPU, 256 on CPU)")
    ops.add_argument("--decode-batch", type=int, help="sequences per decode step (default 64 on GPU, 4 on CPU)")
    ops.add_argument("--context", type=int, help="KV-cache length for decode attention (default 2048 on GPU, "
                                                 "256 on CPU)")
    ops.add_argument("--tp", type=int, default=1, help="time the tensor-parallel shards of this degree (default 1)")
    ops.add_argument("--backward", action="store_true", help="also time forward+backward (training) for prefill")
    ops.add_argument("--gemm-size", type=count(1), default=None, help="ceiling GEMM N (default 8192 on GPU, 512 on CPU)")
    ops.add_argument("--copy-size", default=None, help="ceiling copy size (default 1G on GPU, 64M on CPU)")
    ops.set_defaults(func=cmd_ops)

    comm = msub.add_parser("comm", help="collectives across the processes torchrun started",
                           description="All-reduce, all-gather, reduce-scatter, broadcast, all-to-all and send/recv "
                                       "across message sizes, with nccl-tests' algorithm and bus bandwidth; run it "
                                       "under torchrun (NCCL on GPUs, gloo on CPU).")
    comm.add_argument("--ops", default="all_reduce,all_gather,reduce_scatter,broadcast,all_to_all,send_recv",
                      help="collectives to time")
    comm.add_argument("--sizes", default="1K-1G", help="message sizes: a range of powers of two (1K-1G) or a list")
    comm.add_argument("--warmup", type=count(0), default=5, help="untimed calls per size (default 5)")
    comm.add_argument("--iters", type=count(1), default=20, help="timed calls per size (default 20)")
    add_output_argument(comm, "write the results as JSON (rank 0)")
    comm.set_defaults(func=cmd_comm)

    layer = msub.add_parser("layer", help="one layer's time split into attention, MLP, norms and communication",
                            description="The paper's module-wise analysis: one decoder layer's operators measured "
                                        "at the tensor-parallel shard shapes of each degree, plus two all-reduces "
                                        "per layer (measured with --comm, else estimated from the catalog link).")
    _common(layer)
    layer.add_argument("--tp", type=_ints, default=[1, 2, 4, 8], help="tensor-parallel degrees (default 1,2,4,8)")
    layer.add_argument("--phase", choices=["prefill", "decode"], default="prefill", help="default prefill")
    layer.add_argument("--batch", type=count(1), default=1, help="sequences (default 1)")
    layer.add_argument("--seq-len", type=count(1), help="prefill length, or decode context (default 2048 on GPU, "
                                                   "256 on CPU)")
    layer.add_argument("--attn", default="sdpa-flash", help="attention implementation (default sdpa-flash)")
    layer.add_argument("--comm", help="results JSON of `micro comm` to take all-reduce times from")
    layer.add_argument("--gpu", default="h100", help="catalog GPU whose link bandwidth estimates communication "
                                                     "when --comm is not given (default h100)")
    layer.set_defaults(func=cmd_layer)

    prof = msub.add_parser("profile", help="measure ceilings and operator cost tables for the simulated engine",
                           description="Measured GEMM and copy ceilings plus per-layer operator tables by token "
                                       "count, written as a profile that `loadgen run --profile` loads.")
    _common(prof)
    prof.add_argument("--gpu", default=None, help="catalog GPU this profile stands for (recorded; default: none)")
    prof.add_argument("--tokens", type=_ints, default=None,
                      help="token counts for the per-layer operator tables (default 1,4,...,16384 on GPU, "
                           "1,16,256 on CPU)")
    prof.add_argument("--prefill-seqs", type=_ints, default=None,
                      help="sequence lengths for prefill attention (default 128,512,2048,4096 on GPU, 64,256 on CPU)")
    prof.add_argument("--decode", type=_pairs, default=None,
                      help="BATCHxCONTEXT points for decode attention (default 1x512,...,256x4096 on GPU, "
                           "1x256,4x256 on CPU)")
    prof.add_argument("--attn", default="sdpa-flash", help="attention implementation (default sdpa-flash)")
    prof.add_argument("--gemm-size", type=count(1), default=None, help="ceiling GEMM N (default 8192 on GPU, 512 on CPU)")
    prof.add_argument("--copy-size", default=None, help="ceiling copy size (default 1G on GPU, 64M on CPU)")
    prof.set_defaults(func=cmd_profile)
    return parser


def _needs_torch(args: argparse.Namespace) -> bool:
    """Every command measures with PyTorch, except a sweep that only reads earlier results (--from)."""
    return not (args.command == "sweep" and getattr(args, "from_file", None))


def _missing_module(exc: ImportError) -> str:
    name = exc.name or (re.findall(r"module named '?([\w.]+)", str(exc)) or ["torch" if "torch" in str(exc) else "?"])[0]
    return name.split(".")[0]


def _install_hint(exc: ImportError) -> str:
    name = _missing_module(exc)
    if name == "torch":
        return "PyTorch is not importable: pip install -e '.[train]' (or pip install torch)"
    return f"the Python package {name} is not importable: pip install -e '.[train]' (or pip install {name})"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from training_bench.fast_paths import quiet_imports

    quiet_imports()
    try:
        if _needs_torch(args):  # before any work or any file is written
            import torch  # noqa: F401
        return args.func(args)
    except ImportError as exc:  # a missing extra, whichever command found it
        print(f"training_bench: error: {_install_hint(exc)}", file=sys.stderr)
        return 2
    except (BenchError, CatalogError) as exc:
        print(f"training_bench: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("training_bench: interrupted", file=sys.stderr)
        return 130
    except OSError as exc:
        print(f"training_bench: error: {exc.strerror}: {exc.filename}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
