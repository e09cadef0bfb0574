"""``mmfree profile``: where the cycles of a token go, matrix by matrix.

The core (:class:`mmfree.hw.core.Core`, the accelerator without its link) runs in Amaranth's own
simulator: the model is put into the core's memories as :func:`mmfree.memory_map.to_regions` lays it
out and its write ports would leave it (:func:`mmfree.sim.core_sim.preload_regions`: no clocks, where
a word a clock through the ports took minutes for ``demo``), then two tokens are stepped, each answer checked against the integer golden model. In
the second token (the steady state: the first also fetches the norm weights that later tokens find
fetched ahead) every clock at which the matrix-vector unit takes a weight beat is recorded. The beats
come in TRITS order (:func:`mmfree.memory_map.matrix_order`), ``rows x cols / (lanes x row units)``
of them a matrix, so each beat belongs to a known matrix, and the token's cycles split exactly into

- the cycles before the first beat (the embedding row, the first norm, the quantiser),
- for each matrix, the cycles *waiting* between the previous matrix's last beat and its first one
  (its input vector: the previous results through rescale, write-back, the vector unit and the
  quantiser), its *beats* (one a clock at best, the ideal) and its *stalls* (clocks between its first
  and last beat without a beat),
- the cycles after the last beat (the last rows through rescale and write-back, the argmax).
"""

import json
import sys
import time

__all__ = ["profile", "ProfileError", "register"]


class ProfileError(ValueError):
    """The simulated core did not do what a token requires: its answer differs from the golden
    model's, it gave none, or its weight beats or busy clocks do not add up."""


def _trace_token(dut, beats, busy_clocks):
    """A process recording, while ``dut.busy``, the clock of every weight beat taken into ``beats``
    and the busy clocks into ``busy_clocks[0]`` (both cleared at each token's start). Clocks count as
    the core's ``cycles`` do: clock 0 is the one the request is accepted in, the first busy one 1."""
    w = dut.probe["linear"].w

    async def monitor(ctx):
        clock = None
        async for _, _, busy, valid, ready in ctx.tick().sample(dut.busy, w.valid, w.ready):
            if not busy:
                clock = None
                continue
            if clock is None:
                clock = 1
                beats.clear()
            if valid and ready:
                beats.append(clock)
            busy_clocks[0] = clock
            clock += 1
    return monitor


def split(beats, cycles, matrices, lanes):
    """Split one token's ``cycles`` by the clocks of its weight ``beats``.

    ``matrices``: ``(name, rows, cols)`` in TRITS order; ``lanes``: weights a beat (all row units).
    Returns ``{"head", "tail", "matrices": [{"name", "beats", "waiting", "stalls"}, ...]}``, whose
    numbers add up to ``cycles``.
    """
    sizes = [rows * cols // lanes for _, rows, cols in matrices]
    if len(beats) != sum(sizes):
        raise ProfileError(f"the core took {len(beats):,} weight beats in a token, not "
                           f"{sum(sizes):,} (the model's weights / {lanes} lanes)")
    out, at, last = [], 0, None
    for (name, rows, cols), n in zip(matrices, sizes):
        first, end = beats[at], beats[at + n - 1]
        out.append(dict(name=name, rows=rows, cols=cols, beats=n,
                        waiting=0 if last is None else first - last - 1, stalls=end - first + 1 - n))
        at, last = at + n, end
    return dict(head=beats[0], tail=cycles - last - 1, matrices=out)


def profile(model="tiny", *, lanes=None, rows=None, token=None, progress=False):
    """Simulate two tokens of ``model`` on the core; returns the profile of the second (a dict)."""
    from amaranth.sim import Simulator
    from tqdm import tqdm
    from mmfree import memory_map as mm
    from mmfree.golden import GoldenModel
    from mmfree.hw.core import Core, Command, region_words
    from mmfree.registry import resolve
    from mmfree.sim.board import _config_for
    from mmfree.sim.core_sim import preload_regions, request
    from mmfree.sim.commands import _lanes_text

    q = resolve(model).quantized()
    config = _config_for(q.shape, lanes, "core", rows)
    P, R = config.lanes, config.rows
    V = q.shape.vocab_size
    if token is None:
        token = min(ord("R"), V - 1)
    if not 0 <= token < V:
        raise ValueError(f"token must be 0 to {V - 1} (the model's vocabulary), not {token}")
    words = region_words(mm.to_regions(q, P, R), P, R)
    total_words = sum(map(len, words.values()))

    def say(msg):
        if progress:
            print(f"profile: {msg}", file=sys.stderr, flush=True)

    say(f"elaborating the core ({_lanes_text(config)})")
    t0 = time.monotonic()
    dut = Core(config)
    sim = Simulator(dut)
    sim.add_clock(1 / config.clk_freq)
    beats, busy_clocks = [], [0]
    answers = []
    golden = GoldenModel(q)

    async def bench(ctx):
        say(f"loading the model's {total_words:,} words into the core's memories")
        with tqdm(total=total_words, unit="word", file=sys.stderr, leave=False,
                  disable=not progress) as bar:
            preload_regions(ctx, dut, words, bar.update)
        tok = token
        limit = 20 * q.shape.ternary_weights // (P * R) + 100_000
        for n in range(2):
            say(f"token {n + 1} of 2")
            try:
                got = await request(ctx, dut, Command.STEP, tok, limit)
            except AssertionError as e:
                raise ProfileError(f"token {n + 1}: {e}") from None
            logits, want = golden.step(tok)
            if got[:3] != (want, int(logits.max()), 0):
                raise ProfileError(f"token {n + 1}: the core answered {got[0]} (logit {got[1]}, error "
                                   f"{got[2]}), the golden model {want} (logit {int(logits.max())})")
            answers.append(dict(token=tok, next=got[0], cycles=got[3], beats=list(beats),
                                busy=busy_clocks[0]))
            tok = got[0]

    sim.add_testbench(bench)
    sim.add_process(_trace_token(dut, beats, busy_clocks))
    sim.run()
    last = answers[-1]
    if last["busy"] + 1 != last["cycles"]:
        raise ProfileError(f"the core counted {last['cycles']:,} cycles for a token that kept it busy "
                           f"{last['busy']:,} clocks after the one it was accepted in")
    lanes_all = config.total_lanes
    result = split(last["beats"], last["cycles"], mm.matrix_order(q.shape), lanes_all)
    result.update(model=model, layout=_lanes_text(config), lanes=lanes_all, lanes_per_row=P, rows=R,
                  weights_per_token=q.shape.ternary_weights, cycles_per_token=last["cycles"],
                  first_token_cycles=answers[0]["cycles"], tokens=[a["token"] for a in answers],
                  ideal_cycles_per_token=q.shape.ternary_weights / lanes_all,
                  simulation_s=time.monotonic() - t0)
    return result


def _by_kind(matrices):
    """The matrices' figures summed over layers: ``[(kind, count, rows, cols, beats, waiting, stalls)]``."""
    kinds = {}
    for mtx in matrices:
        kind = mtx["name"].split(".")[-1]
        k = kinds.setdefault(kind, [kind, 0, mtx["rows"], mtx["cols"], 0, 0, 0])
        k[1] += 1
        k[4] += mtx["beats"]
        k[5] += mtx["waiting"]
        k[6] += mtx["stalls"]
    return list(kinds.values())


def cmd_profile(args):
    r = profile(args.model, lanes=args.lanes, rows=args.rows, token=args.token,
                progress=sys.stderr.isatty() or not args.json)
    if args.json:
        print(json.dumps(r, indent=2))
        return 0
    cyc = r["cycles_per_token"]
    print(f"{r['model']}: a token of {r['weights_per_token']:,} ternary weights on {r['layout']} "
          f"(the second of two tokens, both identical to the golden model)")
    print(f"  {'matrix':<12}{'each':>12}{'beats':>9}{'waiting':>9}{'stalls':>8}")
    waiting = stalls = 0
    for kind, n, rows, cols, beats, wait, stall in _by_kind(r["matrices"]):
        name = kind + (f" x{n}" if n > 1 else "")
        print(f"  {name:<12}{f'{rows} x {cols}':>12}{beats:>9,}{wait:>9,}{stall:>8,}")
        waiting += wait
        stalls += stall
    print(f"  before the first beat (embedding, first norm, quantiser)   {r['head']:>7,}")
    print(f"  after the last beat (rescale, write-back, argmax)          {r['tail']:>7,}")
    print(f"  cycles per token  {cyc:,} = {r['weights_per_token'] // r['lanes']:,} beats (the ideal) + "
          f"{waiting:,} waiting + {stalls:,} stalls + {r['head'] + r['tail']:,} before and after")
    print(f"  lane utilisation  {100 * r['ideal_cycles_per_token'] / cyc:.1f}%   (the first token: "
          f"{r['first_token_cycles']:,} cycles)")
    print("  waiting: clocks from one matrix's last beat to the next one's first (its input vector")
    print("  through rescale, write-back, the vector unit and the quantiser); stalls: clocks without")
    print("  a beat between a matrix's first and last")
    return 0


def register(sub):
    from mmfree.commands import _positive_arg
    p = sub.add_parser("profile", help="where the cycles of a token go, matrix by matrix "
                                       "(the core in Amaranth's simulator)")
    p.add_argument("--model", default="tiny", help="bundled name, folder or image (default tiny)")
    p.add_argument("--lanes", type=_positive_arg, default=None, help="lanes of each row unit")
    p.add_argument("--rows", type=_positive_arg, default=None,
                   help="row units: rows computed at once, each on --lanes lanes (a power of two)")
    p.add_argument("--token", type=int, default=None,
                   help="the first token fed (default: the byte 'R'); the second is its answer")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_profile)
