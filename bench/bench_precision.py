"""Where bfloat16 compute loses accuracy in the bundled model, and what it buys: the measurements
behind the `mixed` precision mode.

Scores the first SST-2 dev texts with the float32 backend, then again with chosen linear layers
of the decoder changed one way at a time, and prints how far the label probabilities moved
(max and RMS |dp| against float32, argmax flips), the share of the decoder's linear work the
change touches, and texts/s (same process, so only roughly comparable). The ways a layer is
changed separate bf16's three sources of error:

* weights  its weights rounded to bf16, the matmul still float32;
* inputs   its input rounded to bf16, the matmul still float32;
* bf16     computed in bf16 as `mixed` does (`MixedPrecisionLinear`): inputs and weights rounded, and
           the output rounded to bf16 by the matmul itself before it is cast back.

It also checks whether this PyTorch has a CPU matmul with bf16 inputs and a float32 result
(`torch.mm(..., out_dtype=torch.float32)`), the kernel that would remove the third source.

    python bench/bench_precision.py                 # first 256 texts, 2 threads
    python bench/bench_precision.py --blocks        # also each group per block of 10 layers
    python bench/bench_precision.py --kernels       # matmul kernels alone: bf16, int8, two-digit int8,
                                                    # and whether torch._int_mm's sums are exact
    python bench/bench_precision.py --int8          # only gate/up with int8 weights and/or inputs
    python bench/bench_precision.py --smoothquant --limit 300   # int8 with smoothed activations

``--int8`` asks whether one int8 digit per value could replace bf16 where bf16 is emulated
(CPUs with AVX2 alone): its rows (instead of the bf16 ones) round to the int8 grid and compute
in float32 (what an int8 kernel with int32 sums computes, up to float32 rounding), weights per
output channel, inputs per token or, as torch's dynamic int8 linear quantizes them, per tensor.
``--kernels`` times that linear (``quantized::linear_dynamic``) on each engine torch has here;
oneDNN's honours ``ONEDNN_MAX_CPU_ISA``, fbgemm picks its kernels from the CPU itself.

``--smoothquant`` tries SmoothQuant's answer to the MLP inputs' outlier channels: each input
channel j is divided by s_j = max|X_j|^a / max|W_j|^(1-a) and the weight's column multiplied by
it (free at run time: folded into the RMSNorm before gate/up, or into up's rows before down),
with max|X_j| taken from calibration texts (the first SST-2 *train* texts of ten words or more, none of them scored).
Then inputs are rounded per token, weights per output channel, to 8 bits (or 7 where an AVX2
kernel without VNNI would keep only 7). Its rows also print the 99.5th percentile of the
largest label move per text and the share of texts within 0.01 of float32 with its argmax,
before and after `mixed`'s re-scoring of near ties (``exact_ties``) in float32, and how many
texts that re-scores.
"""

from __future__ import annotations

import argparse
import functools
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
DEV = ROOT.parent / "shared" / "data" / "sentiment" / "sst2" / "dev.tsv"
TRAIN = DEV.with_name("train.tsv")  # --smoothquant's calibration texts: never scored here
TOLERANCE = 0.01  # issue 12: within 0.01 of float32 with its argmax on >= 99.5 % of texts
GROUPS = {
    "q/k/v": ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"),
    "o": ("self_attn.o_proj",),
    "gate/up": ("mlp.gate_proj", "mlp.up_proj"),
    "down": ("mlp.down_proj",),
}


def has_bf16_to_float32_matmul() -> bool:
    a = torch.ones(4, 4, dtype=torch.bfloat16)
    try:
        return torch.mm(a, a, out_dtype=torch.float32).dtype == torch.float32
    except (NotImplementedError, RuntimeError, TypeError):
        return False


def timed(fn, repeats: int = 20) -> float:
    """Seconds per call, after two warm-up calls."""
    fn(), fn()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats


class TwoDigitInt8Linear:
    """y = x W^T from int8 matmuls with exact int32 sums (``torch._int_mm``): x and W are each
    split into two int8 digits under a per-row scale (about 15 bits), and the three products
    that matter are summed in float32. No rounding of the output, unlike bf16."""

    def __init__(self, weight: torch.Tensor) -> None:
        w_hi, w_lo, self.w_scale = self.digits(weight)
        self.w_hi = w_hi.t().contiguous()
        self.w_both = torch.cat([w_lo, w_hi], 1).t().contiguous()  # pairs with [x_hi | x_lo]

    @staticmethod
    def digits(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        scale = x.abs().amax(1, keepdim=True).clamp(min=1e-30) / 127
        scaled = x / scale
        hi = scaled.round()
        lo = ((scaled - hi) * 254).round()
        return hi.to(torch.int8), lo.to(torch.int8), scale

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        x_hi, x_lo, x_scale = self.digits(x)
        high = torch._int_mm(x_hi, self.w_hi)
        cross = torch._int_mm(torch.cat([x_hi, x_lo], 1), self.w_both)
        return (high.float() + cross.float() / 254) * (x_scale * self.w_scale.t())


def dynamic_int8_linear(weight: torch.Tensor, engine: str):
    """torch's dynamic int8 linear on ``engine``: weight per output channel, each call's input
    per tensor (7 bits on fbgemm, whose AVX2 kernels sum pairs in int16), int32 sums."""
    scale = (weight.abs().amax(1).clamp(min=1e-12) / 127).double()
    quantized = torch.quantize_per_channel(weight, scale, torch.zeros(len(scale), dtype=torch.long), 0, torch.qint8)
    before = torch.backends.quantized.engine
    torch.backends.quantized.engine = engine  # read when the weight is packed
    try:
        packed = torch.ops.quantized.linear_prepack(quantized, None)
    finally:
        torch.backends.quantized.engine = before
    return lambda x: torch.ops.quantized.linear_dynamic(x, packed, engine != "onednn")


def int_mm_error(weight_limit: int, rows: int = 64) -> int:
    """Largest error of ``torch._int_mm`` against exact integer sums, for random int8 inputs and
    weights within +-``weight_limit``. Without VNNI (AVX2; ``ONEDNN_MAX_CPU_ISA=AVX2`` simulates
    it) oneDNN sums pairs of u8 x s8 products in int16, which saturates unless the weights keep
    to 7 bits."""
    generator = torch.Generator().manual_seed(1)
    x = torch.randint(-127, 128, (rows, 576), dtype=torch.int8, generator=generator)
    w = torch.randint(-weight_limit, weight_limit + 1, (576, 1536), dtype=torch.int8, generator=generator)
    return int((torch._int_mm(x, w).long() - x.long() @ w.long()).abs().max())


def kernels(rows: int = 1024) -> None:
    """Matmul rates at the model's gate/up shape, and what a bf16-free int8 route would cost."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(rows, 576, generator=generator)
    weight = torch.randn(1536, 576, generator=generator) * 0.05
    flops = 2 * rows * 576 * 1536
    exact = x.double() @ weight.double().t()
    x_bf16, w_bf16 = x.bfloat16(), weight.bfloat16()
    x_int8 = torch.randint(-127, 127, (rows, 576), dtype=torch.int8, generator=generator)
    w_int8 = torch.randint(-127, 127, (576, 1536), dtype=torch.int8, generator=generator)
    two_digit = TwoDigitInt8Linear(weight)
    from howsure.backends.transformers.onednn import pack_weight, packed_linear

    packed = pack_weight(weight)
    engines = [e for e in ("onednn", "fbgemm") if e in torch.backends.quantized.supported_engines]

    def error(y: torch.Tensor) -> float:
        return float((y.double() - exact).norm() / exact.norm())

    print(f"\nkernels at {rows}x576 @ 576x1536 (the gate/up shape), relative error against float64")
    print(f"{'kernel':44s} {'GFLOP/s':>8s} {'ms':>7s} {'rel. error':>11s}")
    for name, fn in (
        ("float32 linear", lambda: torch.nn.functional.linear(x, weight)),
        ("float32 oneDNN linear, packed weight", lambda: packed_linear(x, packed)),
        *((f"int8 dynamic linear, {e} engine", functools.partial(dynamic_int8_linear(weight, e), x))
          for e in engines),
        ("bf16 linear (cast in and out)", lambda: torch.nn.functional.linear(x.bfloat16(), w_bf16).float()),
        ("bf16 matmul alone", lambda: x_bf16 @ w_bf16.t()),
        ("int8 torch._int_mm alone (int32 result)", lambda: torch._int_mm(x_int8, w_int8)),
        ("two-digit int8 linear (3 int8 products)", lambda: two_digit(x)),
    ):
        seconds = timed(fn)
        err = "" if "alone" in name else f"{error(fn()):11.1e}"
        print(f"{name:44s} {flops / seconds / 1e9:8.0f} {seconds * 1e3:7.2f} {err}")
    print(f"torch._int_mm against exact int sums, largest error: weights +-127 {int_mm_error(127)}, "
          f"+-63 {int_mm_error(63)}")


def on_int8_grid(x: torch.Tensor, per_tensor: bool = False, bits: int = 8) -> torch.Tensor:
    """``x`` rounded to 255 levels per row (symmetric, scaled to the row's largest value): what
    an int8 matmul sees of a weight per output channel, or of an input per token; with
    ``per_tensor``, one scale for all of ``x`` (the input of torch's dynamic int8 linear).
    ``bits=7``: 127 levels, what a kernel that halves the weights to stay clear of int16
    saturation keeps."""
    top = 2 ** (bits - 1) - 1
    scale = (x.abs().amax() if per_tensor else x.abs().amax(-1, keepdim=True)).clamp(min=1e-30) / top
    return (x / scale).round() * scale


def smoothing(input_max: torch.Tensor, weight: torch.Tensor, alpha: float) -> torch.Tensor:
    """SmoothQuant's per-input-channel divisor s_j = max|X_j|^a / max|W_j|^(1-a): dividing the
    input by it and multiplying the weight's columns by it leaves the product unchanged and
    moves the outliers' range from the input to the weight by the share ``alpha``."""
    weight_max = weight.abs().amax(0).clamp(min=1e-5)
    return input_max.clamp(min=1e-5) ** alpha / weight_max ** (1 - alpha)


class SmoothedInt8Linear(torch.nn.Module):
    """What an int8 kernel computes for a smoothed linear layer, in float32: the input divided
    by ``smooth`` and rounded per token, the weight times ``smooth`` rounded per output channel
    (``weight_bits``), products summed exactly enough (int32 sums are exact; float32 rounding
    of sums this size is far below the grid's)."""

    def __init__(self, linear: torch.nn.Linear, smooth: torch.Tensor, weight_bits: int = 8) -> None:
        super().__init__()
        self.smooth = smooth
        self.weight = on_int8_grid(linear.weight.detach() * smooth, bits=weight_bits)
        self.bias = linear.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.linear(on_int8_grid(x / self.smooth), self.weight, self.bias)


class Experiment:
    """The float32 backend, its reference probabilities, and a way to change layers and undo it."""

    def __init__(self, texts: list[str], threads: int) -> None:
        from howsure.backends import load_backend
        from howsure.core.task import load_task

        self.texts, self.task = texts, load_task("sentiment")
        # transformers' own linear layers: the experiments swap them one group at a time.
        self.backend = load_backend("smollm2-135m", dtype="float32", threads=threads, prepack=False)
        model = self.backend.model
        self.layers = {name: module for name, module in model.named_modules()
                       if isinstance(module, torch.nn.Linear) and ".layers." in f".{name}"}
        self.original = {name: module.weight.detach().clone() for name, module in self.layers.items()}
        self.total_work = sum(module.weight.numel() for module in self.layers.values())
        self.handles: list = []
        self.float32_prefix = False
        self.swapped: list[tuple[torch.nn.Module, str, torch.nn.Linear]] = []
        self.reference, _ = self.score()

    def select(self, group: str, blocks: range | None = None) -> list[str]:
        suffixes = GROUPS[group]
        return [name for name in self.layers if name.endswith(suffixes)
                and (blocks is None or int(name.split(".layers.")[1].split(".")[0]) in blocks)]

    def score(self, texts: list[str] | None = None) -> tuple[np.ndarray, float]:
        """All label probabilities of ``texts`` (the experiment's by default), shape (n, labels),
        and texts/s. The shared prefix's cache is computed again with the changed layers, unless
        ``float32_prefix`` (`use_float32_prefix`)."""
        texts = self.texts if texts is None else texts
        if not self.float32_prefix:
            self.backend._prepared.clear()  # the shared prefix's cache depends on the precision
        start = time.perf_counter()
        scores = self.backend.label_scores(self.task, texts)
        return np.array([s.probabilities for s in scores]), len(texts) / (time.perf_counter() - start)

    def use_float32_prefix(self, on: bool) -> None:
        """With ``on``, the shared prefix's cache is computed once with the float32 layers and
        kept while layers change: a backend can do that at no cost (it is computed once per
        task), and it keeps the prefix's outlier tokens (the first has the model's largest
        activations) out of the changed layers."""
        self.float32_prefix = on
        self.backend._prepared.clear()
        if on:
            self.restore()
            self.backend.prepare(self.task)

    def calibrate(self, texts: list[str]) -> dict[str, torch.Tensor]:
        """Each decoder linear layer's largest |input| per input channel over ``texts`` (the
        shared prefix's tokens too, unless ``float32_prefix``), for `smoothing`."""
        input_max: dict[str, torch.Tensor] = {}

        def record(name):
            def hook(module, args):
                seen = args[0].detach().abs().flatten(0, -2).amax(0)
                input_max[name] = torch.maximum(input_max[name], seen) if name in input_max else seen
            return hook

        handles = [layer.register_forward_pre_hook(record(name)) for name, layer in self.layers.items()]
        try:
            self.score(texts)
        finally:
            for handle in handles:
                handle.remove()
        return input_max

    def smoothquant(self, names: list[str], input_max: dict[str, torch.Tensor], alpha: float,
                    weight_bits: int = 8) -> None:
        """Swap ``names`` for `SmoothedInt8Linear`; layers that share an input (gate and up)
        share one divisor, from their weights' joint column maxima."""
        model = self.backend.model
        by_input: dict[str, list[str]] = {}
        for name in names:
            parent = name.rpartition(".")[0]
            key = f"{parent}.gate/up" if name.endswith(GROUPS["gate/up"]) else name
            by_input.setdefault(key, []).append(name)
        for group in by_input.values():
            weights = torch.cat([self.layers[n].weight.detach() for n in group])
            smooth = smoothing(input_max[group[0]], weights, alpha)
            for name in group:
                parent_name, _, attribute = name.rpartition(".")
                parent = model.get_submodule(parent_name)
                self.swapped.append((parent, attribute, self.layers[name]))
                setattr(parent, attribute, SmoothedInt8Linear(self.layers[name], smooth, weight_bits))

    def restore(self) -> None:
        for handle in self.handles:
            handle.remove()
        self.handles.clear()
        for parent, attribute, original in self.swapped:
            setattr(parent, attribute, original)
        self.swapped.clear()
        with torch.no_grad():
            for name, module in self.layers.items():
                module.float()
                module.weight.copy_(self.original[name])

    def change(self, names: list[str], how: str) -> None:
        from howsure.backends.transformers.precision import MixedPrecisionLinear

        model = self.backend.model
        for name in names:
            layer = self.layers[name]
            if how == "weights":
                with torch.no_grad():
                    layer.weight.copy_(layer.weight.bfloat16().float())
            elif how == "int8 weights":
                with torch.no_grad():
                    layer.weight.copy_(on_int8_grid(layer.weight))
            elif how in ("int8 inputs", "int8 inputs per tensor"):
                per_tensor = how.endswith("tensor")
                self.handles.append(layer.register_forward_pre_hook(
                    lambda module, args, per_tensor=per_tensor: tuple(on_int8_grid(a, per_tensor) for a in args)))
            elif how == "inputs":
                self.handles.append(layer.register_forward_pre_hook(
                    lambda module, args: tuple(a.bfloat16().float() for a in args)))
            else:
                parent_name, _, attribute = name.rpartition(".")
                parent = model.get_submodule(parent_name)
                self.swapped.append((parent, attribute, layer))
                setattr(parent, attribute, MixedPrecisionLinear(layer))

    def row(self, label: str, changes: list[tuple[list[str], str]], *, smoothquant: dict | None = None,
            ties: tuple[float, ...] = (), float32_prefix: bool = False) -> None:
        """One line of the table. ``smoothquant``: `smoothquant`'s keyword arguments, applied
        after ``changes``. ``ties``: also print, for each ``exact_ties``, the share of texts
        within `TOLERANCE` of float32 with its argmax once near ties are re-scored in float32,
        and the share re-scored. ``float32_prefix``: see `use_float32_prefix`."""
        self.use_float32_prefix(float32_prefix)
        self.restore()
        for names, how in changes:
            self.change(names, how)
        if smoothquant:
            self.smoothquant(**smoothquant)
        probs, speed = self.score()
        self.restore()
        self.use_float32_prefix(False)
        moved = np.abs(probs - self.reference).max(1)
        same = probs.argmax(1) == self.reference.argmax(1)
        flips = int((~same).sum())
        changed = {n for names, _ in changes for n in names} | set(smoothquant["names"] if smoothquant else ())
        work = sum(self.layers[n].weight.numel() for n in changed) / self.total_work  # a layer changed two ways counts once
        line = (f"{label:34s} {moved.max():8.4f} {np.sqrt(np.mean((probs - self.reference)[:, 0] ** 2)):8.5f} "
                f"{flips:6d} {work:7.0%} {speed:8.1f}")
        if ties:
            line += f" {np.percentile(moved, 99.5):8.4f} {np.mean((moved <= TOLERANCE) & same):6.1%}"
            from howsure.backends.transformers.backend import top_two_gap

            gaps = np.array([top_two_gap(p) for p in probs])
            for exact_ties in ties:
                again = gaps < 2 * exact_ties  # what mixed re-scores exactly (TransformersBackend.label_scores)
                line += f" {np.mean(((moved <= TOLERANCE) & same) | again):7.1%} {np.mean(again):5.1%}"
        print(line, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--limit", type=int, default=256)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--blocks", action="store_true", help="each group alone per block of 10 layers")
    parser.add_argument("--kernels", action="store_true", help="only the matmul kernels' speed and error")
    parser.add_argument("--int8", action="store_true", help="only gate/up with int8 weights and/or inputs")
    parser.add_argument("--smoothquant", action="store_true",
                        help="only int8 layers with SmoothQuant's smoothing, and near-tie re-scoring")
    parser.add_argument("--calibration", type=int, default=32, help="--smoothquant: calibration texts")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    import pandas as pd

    from howsure.backends.transformers import cpu_features

    if args.kernels:
        print(f"{args.threads} threads, torch {torch.__version__}; {cpu_features.describe()}")
        kernels()
        return
    texts = pd.read_csv(DEV, sep="\t", keep_default_na=False, dtype=str)["content"].tolist()[: args.limit]
    print(f"{len(texts)} SST-2 dev texts, {args.threads} threads, model smollm2-135m, bundled sentiment task")
    print(f"CPU matmul with bf16 inputs and a float32 result in torch {torch.__version__}: "
          f"{'yes' if has_bf16_to_float32_matmul() else 'no'}")
    exp = Experiment(texts, args.threads)
    everything = [n for group in GROUPS for n in exp.select(group)]
    mixed = exp.select("gate/up")
    if args.smoothquant:
        smoothquant_rows(exp, args.calibration)
        return
    print(f"\n{'changed layers':34s} {'max|dp|':>8s} {'rms dp':>8s} {'flips':>6s} {'work':>7s} {'texts/s':>8s}")
    print("-" * 76)
    exp.row("none (float32 again)", [])
    if args.int8:
        exp.row("gate/up: int8 weights", [(mixed, "int8 weights")])
        exp.row("gate/up: int8 inputs", [(mixed, "int8 inputs")])
        exp.row("gate/up: int8 weights and inputs", [(mixed, "int8 weights"), (mixed, "int8 inputs")])
        exp.row("gate/up: int8 w, inputs/tensor", [(mixed, "int8 weights"), (mixed, "int8 inputs per tensor")])
        return
    for label, names in (("gate/up", mixed), ("all linear layers", everything)):
        for how in ("weights", "inputs", "bf16"):
            exp.row(f"{label}: {how}", [(names, how)])
    for group in ("down", "o", "q/k/v"):
        exp.row(f"mixed + {group}: bf16", [(mixed, "bf16"), (exp.select(group), "bf16")])
    if args.blocks:
        n_layers = 1 + max(int(n.split(".layers.")[1].split(".")[0]) for n in exp.layers)
        for group in GROUPS:
            for start in range(0, n_layers, 10):
                blocks = range(start, min(start + 10, n_layers))
                exp.row(f"{group} layers {blocks.start}-{blocks.stop - 1}: bf16", [(exp.select(group, blocks), "bf16")])



def smoothquant_rows(exp: Experiment, n_calibration: int, ties: tuple[float, ...] = (0.01, 0.02, 0.05)) -> None:
    """``--smoothquant``: int8 gate/up (and down) with and without smoothing, on the int8 grid."""
    import pandas as pd

    train = pd.read_csv(TRAIN, sep="\t", keep_default_na=False, dtype=str)["sentence"]
    # The train file is mostly short phrases; whole sentences look more like the texts scored.
    calibration = [t for t in train if len(t.split()) >= 10][:n_calibration]
    input_max = exp.calibrate(calibration)
    exp.use_float32_prefix(True)
    text_input_max = exp.calibrate(calibration)  # the texts' own tokens, for rows with a float32 prefix
    exp.use_float32_prefix(False)
    print(f"smoothing from {len(calibration)} SST-2 train texts of >= 10 words; 'ok': within {TOLERANCE} of "
          f"float32 with its argmax; 'ok/T': the same after re-scoring in float32 the texts whose top two "
          f"labels are within 2 x T (mixed's exact_ties); 're': the share re-scored; 'f32 prefix': the "
          f"shared prefix computed in float32, smoothing from the texts' tokens alone; 'w7': 7-bit weights")
    header = (f"{'changed layers':34s} {'max|dp|':>8s} {'rms dp':>8s} {'flips':>6s} {'work':>7s} {'texts/s':>8s} "
              f"{'p99.5':>8s} {'ok':>6s}")
    header += "".join(f" {'ok/' + str(t):>7s} {'re':>5s}" for t in ties)
    print(f"\n{header}\n{'-' * len(header)}")
    gate_up, down = exp.select("gate/up"), exp.select("down")
    exp.row("none (float32 again)", [], ties=ties)
    exp.row("gate/up: int8 weights", [(gate_up, "int8 weights")], ties=ties)
    exp.row("gate/up: int8, no smoothing", [(gate_up, "int8 weights"), (gate_up, "int8 inputs")], ties=ties)
    exp.row("gate/up: int8, f32 prefix", [(gate_up, "int8 weights"), (gate_up, "int8 inputs")], ties=ties,
            float32_prefix=True)
    for alpha in (0.5, 0.8):
        exp.row(f"gate/up: smooth a={alpha}", [], ties=ties,
                smoothquant=dict(names=gate_up, input_max=input_max, alpha=alpha))
        for label, names, bits in (("gate/up", gate_up, 8), ("gate/up/down", gate_up + down, 8),
                                   ("gate/up w7", gate_up, 7)):
            exp.row(f"{label}: a={alpha}, f32 prefix", [], ties=ties, float32_prefix=True,
                    smoothquant=dict(names=names, input_max=text_input_max, alpha=alpha, weight_bits=bits))

if __name__ == "__main__":
    main()
