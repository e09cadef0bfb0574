"""Subcommands on models and images: export, inspect, generate, accuracy, bench-golden."""

import json
import sys
import time

__all__ = ["register"]


def _positive(value):
    try:
        n = int(value)
    except ValueError:
        raise ValueError(f"expected a positive integer, not {value!r}") from None
    if n <= 0:
        raise ValueError(f"expected a positive integer, not {value!r}")
    return n


def _positive_arg(value):
    import argparse
    try:
        return _positive(value)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _nonneg_float(value):
    import argparse
    import math
    try:
        x = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, not {value!r}") from None
    if not (x >= 0 and math.isfinite(x)):
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, not {value!r}")
    return x


def _uint_arg(bits):
    """An argument type: an integer (decimal, or 0x / 0o / 0b) of 0 .. 2**bits - 1."""
    def parse(value):
        import argparse
        try:
            x = int(value, 0)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, not {value!r}") from None
        if not 0 <= x < 1 << bits:
            raise argparse.ArgumentTypeError(f"expected 0 .. {(1 << bits) - 1}, not {value}")
        return x
    return parse


MAX_CLOCK_MHZ = 1000
"""The highest design clock the command line takes: above any of the FPGAs' fabric."""


def _mhz_arg(value):
    """An argument type: a clock frequency in MHz, above 0 and at most :data:`MAX_CLOCK_MHZ`."""
    import argparse
    try:
        x = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a frequency in MHz, not {value!r}") from None
    if not 0 < x <= MAX_CLOCK_MHZ:
        raise argparse.ArgumentTypeError(f"expected a frequency in MHz above 0 and at most "
                                         f"{MAX_CLOCK_MHZ}, not {value!r}")
    return x


# --- export / inspect ----------------------------------------------------------------------------

def cmd_export(args):
    from .registry import resolve
    from .image import write_image
    from .golden import quantize_model
    src = resolve(args.model)
    qmodel = quantize_model(src.float_model())
    size = write_image(qmodel, args.output, args.packing)
    print(f"wrote {args.output}: {size} bytes, {qmodel.shape.ternary_weights} ternary weights "
          f"({args.packing} packing)")
    return 0


def cmd_inspect(args):
    from .image import parse_image, ImageError
    with open(args.image, "rb") as f:
        data = f.read()
    try:
        hdr, sections = parse_image(data, values=True)
    except ImageError as e:
        raise ImageError(f"{args.image}: {e}") from None
    if args.json:
        print(json.dumps({
            "format_version": hdr.format_version, "numeric_spec_version": hdr.numeric_version,
            "shape": vars(hdr.shape), "flags": hdr.flags, "file_size": hdr.file_size,
            "capacity": vars(hdr.capacity),
            "sections": [dict(name=s.name, kind=s.kind_name, rows=s.rows, cols=s.cols, exp=s.exp,
                              offset=s.offset, length=len(s.data), crc32=f"{s.crc:08x}") for s in sections],
        }, indent=2))
        return 0
    s = hdr.shape
    cap = hdr.capacity
    print(f"{args.image}: MatMul-free LM weight image, format {hdr.format_version}, "
          f"numeric spec {hdr.numeric_version}, {hdr.file_size} bytes, all CRCs and values good")
    print(f"  model: vocab {s.vocab_size}, hidden {s.hidden_size}, layers {s.num_layers}, "
          f"intermediate {s.intermediate_size}, {s.ternary_weights} ternary weights")
    print(f"  packing: {'5 trits per byte' if hdr.flags & 1 else '2 bits per trit'}")
    print(f"  needs: {cap.trit_bytes} bytes of trits, {cap.param_bytes} bytes of other parameters, "
          f"{cap.state_words} state words, rows up to {cap.max_row} inputs and {cap.max_rows} outputs")
    print(f"  {'section':<28} {'kind':<8} {'shape':>12} {'exp':>4} {'offset':>9} {'bytes':>8} {'crc32':>8}")
    for sec in sections:
        exp = str(sec.exp) if sec.kind_name == "bfp16" else ""
        print(f"  {sec.name:<28} {sec.kind_name:<8} {f'{sec.rows}x{sec.cols}':>12} {exp:>4} "
              f"{sec.offset:>9} {len(sec.data):>8} {sec.crc:08x}")
    return 0


# --- generate ------------------------------------------------------------------------------------

def encode_prompt(prompt, vocab_size):
    if vocab_size != 256:
        raise ValueError(f"text prompts need a byte-level model (vocab 256); this one has {vocab_size}")
    ids = list(prompt.encode("utf-8"))
    if not ids:
        raise ValueError("the prompt is empty")
    return ids


def cmd_generate(args):
    import torch
    from .registry import resolve
    src = resolve(args.model)
    out = sys.stdout.buffer
    if args.engine == "float":
        model = src.float_model()
        ids = encode_prompt(args.prompt, model.config.vocab_size)
        gen = torch.Generator().manual_seed(args.seed)
        stream = (int(t[0]) for t in model.generate(torch.tensor([ids]), args.n, args.temperature,
                                                     args.top_k or None, gen))
    else:
        from .golden import GoldenModel
        golden = GoldenModel(src.quantized())
        ids = encode_prompt(args.prompt, golden.shape.vocab_size)
        stream = golden.generate(ids, args.n, args.temperature, args.top_k, args.seed)
    out.write(args.prompt.encode("utf-8"))
    out.flush()
    for token in stream:
        out.write(bytes([token]))
        out.flush()
    out.write(b"\n")
    out.flush()
    return 0


# --- accuracy ------------------------------------------------------------------------------------

def cmd_accuracy(args):
    from .registry import resolve
    from .accuracy import compare, validation_text
    model = resolve(args.model).float_model()
    text, desc = validation_text(args.data)
    report = compare(model, text, args.positions, progress=sys.stderr.isatty())
    if args.json:
        print(json.dumps(dict(model=args.model, text=desc, **report.as_dict()), indent=2))
    else:
        print(f"{args.model} on {desc}")
        print(report)
    return 0


# --- bench-golden --------------------------------------------------------------------------------

SHAPES = {
    "370M": dict(vocab_size=32000, hidden_size=1024, num_hidden_layers=24, intermediate_size=2816),
    "1.3B": dict(vocab_size=32000, hidden_size=2048, num_hidden_layers=24, intermediate_size=5632),
}


BENCH_GOLDEN_MAX_TOKENS = 100_000


def cmd_bench_golden(args):
    import torch
    from .golden import GoldenModel
    if args.n > BENCH_GOLDEN_MAX_TOKENS:
        raise ValueError(f"-n {args.n}: bench-golden times at most {BENCH_GOLDEN_MAX_TOKENS:,} tokens")
    if args.model:
        from .registry import resolve
        model = resolve(args.model).float_model()
        name = args.model
    else:
        from .model import HGRNBitConfig, HGRNBitForCausalLM
        torch.manual_seed(args.seed)
        print(f"building a randomly initialised {args.shape}-shaped model ...", file=sys.stderr)
        model = HGRNBitForCausalLM(HGRNBitConfig(**SHAPES[args.shape])).eval()
        name = f"{args.shape} shape, random weights"
    cfg = model.config
    torch.set_num_threads(max(1, torch.get_num_threads()))
    t0 = time.perf_counter()
    golden = GoldenModel.from_float(model)
    t_build = time.perf_counter() - t0
    ids = [int(i) for i in torch.randint(0, cfg.vocab_size, (args.n + 1,), generator=torch.Generator().manual_seed(1))]
    golden.step(ids[0])                     # warm-up
    t0 = time.perf_counter()
    for t in ids[1:]:
        golden.step(t)
    golden_tps = (len(ids) - 1) / (time.perf_counter() - t0)
    with torch.no_grad():
        out = model(torch.tensor([ids[:1]]))
        t0 = time.perf_counter()
        for t in ids[1:]:
            out = model(torch.tensor([[t]]), state=out.state)
        float_tps = (len(ids) - 1) / (time.perf_counter() - t0)
    result = dict(model=name, ternary_weights=cfg.ternary_weights, threads=torch.get_num_threads(),
                  golden_tokens_per_s=golden_tps, float_tokens_per_s=float_tps, quantize_s=t_build)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"{name}: {cfg.ternary_weights:,} ternary weights per token, {result['threads']} threads")
        print(f"  golden model: {golden_tps:.2f} tokens/s ({(len(ids) - 1)} tokens; quantised in {t_build:.1f} s)")
        print(f"  float model:  {float_tps:.2f} tokens/s (recurrent decoding)")
    return 0


def register(sub):
    from .sampler import TOP_K_BITS
    p = sub.add_parser("export", help="write the weight image of a model")
    p.add_argument("model", help="bundled model name or Hugging Face format folder")
    p.add_argument("-o", "--output", required=True, help="image file to write (.mfw)")
    p.add_argument("--packing", choices=["2bit", "base3"], default="2bit",
                   help="2 bits per trit (default) or 5 trits per byte")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("inspect", help="check a weight image and print its header and sections")
    p.add_argument("image")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser("generate", help="generate text with the float or the integer golden model")
    p.add_argument("--model", default="demo", help="bundled name, model folder or weight image (default demo)")
    p.add_argument("--prompt", default="ROMEO:")
    p.add_argument("-n", type=_positive_arg, default=200, help="tokens to generate (default 200)")
    p.add_argument("--engine", choices=["float", "golden"], default="float")
    p.add_argument("--temperature", type=_nonneg_float, default=0.0, help="0 (default) is greedy")
    p.add_argument("--top-k", type=_uint_arg(TOP_K_BITS), default=0,
                   help="sample among the k most likely tokens (0, the default: all), as the device does")
    p.add_argument("--seed", type=_uint_arg(63), default=0)
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("accuracy", help="the integer model against the float model on real text")
    p.add_argument("--model", default="demo")
    p.add_argument("--data", default=None, help="text file (its last 10%% is used); default: the corpus")
    p.add_argument("--positions", type=_positive_arg, default=8192)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_accuracy)

    p = sub.add_parser("bench-golden", help="tokens/s of the golden and float models on this machine")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--shape", choices=sorted(SHAPES), default="370M",
                   help="a published model's shape with random weights (default 370M)")
    g.add_argument("--model", default=None, help="a bundled model, folder or image instead")
    p.add_argument("-n", type=_positive_arg, default=8,
                   help=f"tokens to time (default 8, at most {BENCH_GOLDEN_MAX_TOKENS:,})")
    p.add_argument("--seed", type=_uint_arg(63), default=0, help="seed of the random weights (--shape)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_bench_golden)
