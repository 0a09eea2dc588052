#!/usr/bin/env python3
"""make bench-ratios: SPEC §7's ratios, preftune against PyTorch, taken so that drift cannot fake them.

The project's machine changes speed by up to 2x within minutes (a shared host: memory bandwidth and
clocks move together), so a ratio of `make bench` to a `make bench-pytorch` run minutes later says
more about the minute than the code. This times each measurement right beside its PyTorch
counterparts — `bench-pytorch.py` narrowed to the same work, then `preftune-bench --quick --only
<name> --exact`, then `bench-pytorch.py` again, seconds apart, our rate taken over the mean of
PyTorch's two — for every measurement and precision, in ROUNDS rounds (default 3),
and reports each ratio per round and its median, plus bf16 over fp32 within preftune's own runs.
For every bench-m step and sampling it also reports the ceiling beside the ratio (`ceiling/...`):
the ratio they would reach with their products at the best warm rate the same run measured,
everything else as it was (`preftune-bench`'s `<step>/products` and `sample_dpmpp2m_20/products`
lines), over PyTorch's and, for the sft step and sampling in bf16, over our own fp32; and
`of_ceiling/...`, how close each is to its ceiling: its rate over its bound, both from the same
steps of the products line, so PyTorch's drift does not enter it (the yardstick is measured in the
same process seconds before, and the machine's drift in between does). `ceiling_cold/...` and
`of_ceiling_cold/...` are the same with the products at the best rate they reach on cold operands
(each cycled through copies that outgrow the L3), which is what a pass over more weights and
gradients than the caches hold can have.
One JSON object per line: {"name": "ratio/bench-m/sft_step", "value": median, "unit": "x", "rounds": [...]}.
Needs torch (see make bench-pytorch).
"""
import json, os, statistics, subprocess, sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
ROUNDS = int(os.environ.get("ROUNDS", "3"))
CONFIGS = os.environ.get("BENCH_CONFIGS", "bench-m").split(",")
BENCH = os.path.join(ROOT, ".build", "release", "preftune-bench")

# preftune's measurement → PyTorch's measurement of the same work (PyTorch's pair step is what dpo,
# rpo and dro do; its kto step is an sft-shaped step plus the reference's forward).
PAIRS = {"sft_step": "sft_step", "dpo_step": "pair_step", "dro_step": "pair_step", "rpo_step": "pair_step",
         "kto_step": "kto_step", "sample_dpmpp2m_20": "sample_dpmpp2m_20"}

# Every measurement above has a `/products` line on bench-m, whose bound is its one field ending in
# `_at_best_rate` (`rows_per_s_at_best_rate`, ...): the rate with the products at the best warm rate
# the bench measured in that precision, everything else as it was.
# The measurements with a bf16 target over our own fp32 (SPEC §7: 3× on AMX).
BF16_TARGETS = ("sft_step", "sample_dpmpp2m_20")

def records(command, env=None):
    result = subprocess.run(command, cwd=ROOT, env={**os.environ, **(env or {})}, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"bench-ratios: {os.path.basename(command[-1] if command[0] == sys.executable else command[0])} "
                 f"failed (exit {result.returncode}):\n{result.stderr.strip()}")
    found = {}
    for line in result.stdout.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        found[record["name"].removeprefix("pytorch/")] = record
    return found


def lines(command, env=None):
    return {name: record["value"] for name, record in records(command, env).items()}


# bf16 only where the CPU computes it natively: elsewhere preftune-bench refuses it, saying why.
probe = subprocess.run([BENCH, "--precision", "bf16", "--only", "no-measurement", "--exact"], cwd=ROOT, capture_output=True, text=True)
PRECISIONS = (("", "fp32"), ("_bf16", "bf16")) if probe.returncode == 0 else (("", "fp32"),)
if probe.returncode != 0:
    print(json.dumps({"name": "bench-ratios/bf16_skipped", "reason": probe.stderr.strip()}), file=sys.stderr)

ratios = {}
for round_number in range(ROUNDS):
    for config in CONFIGS:
        ours, theirs = {}, {}
        for suffix, precision in PRECISIONS:
            for name, their_name in PAIRS.items():
                # PyTorch just before and just after ours, and their mean: a drift that runs one
                # way through the three measurements moves both sides alike.
                def pytorch():
                    return lines([sys.executable, os.path.join(ROOT, "scripts", "bench-pytorch.py")],
                                 {"BENCH_CONFIGS": config, "BENCH_ONLY": their_name, "BENCH_PRECISIONS": precision,
                                  "BENCH_SECONDS": "1.5"}).get(f"{config}/{their_name}{suffix}")
                before = pytorch()
                ours.update(lines([BENCH, "--quick", "--only", f"{config}/{name}{suffix}", "--exact", "--precision", precision]))
                after = pytorch()
                timed = [rate for rate in (before, after) if rate]
                other = statistics.mean(timed) if timed else None
                theirs[f"{config}/{name}{suffix}"] = {"pytorch": f"{config}/{their_name}{suffix}", "before_and_after": timed}
                mine = ours.get(f"{config}/{name}{suffix}")
                if mine and other:
                    ratios.setdefault(f"ratio/{config}/{name}{suffix}", []).append(mine / other)
                # The ceiling beside the ratio: the step or sampling with its products at the best
                # warm rate the same run measured (bench-m only), over PyTorch's mean just taken.
                if config == "bench-m":
                    bound = records([BENCH, "--quick", "--only", f"{config}/{name}{suffix}/products", "--exact", "--precision", precision])
                    line = bound.get(f"{config}/{name}{suffix}/products", {})
                    best = next((value for field, value in line.items() if field.endswith("_at_best_rate")), None)
                    best_cold = next((value for field, value in line.items() if field.endswith("_at_best_cold_rate")), None)
                    if line.get("fraction_of_bound"):
                        ratios.setdefault(f"of_ceiling/{config}/{name}{suffix}", []).append(line["fraction_of_bound"])
                    if line.get("fraction_of_cold_bound"):
                        ratios.setdefault(f"of_ceiling_cold/{config}/{name}{suffix}", []).append(line["fraction_of_cold_bound"])
                    if best:
                        ours[f"{config}/{name}{suffix}/at_best_rate"] = best
                        if other:
                            ratios.setdefault(f"ceiling/{config}/{name}{suffix}", []).append(best / other)
                    if best_cold:
                        ours[f"{config}/{name}{suffix}/at_best_cold_rate"] = best_cold
                        if other:
                            ratios.setdefault(f"ceiling_cold/{config}/{name}{suffix}", []).append(best_cold / other)
        for name in BF16_TARGETS:
            if ours.get(f"{config}/{name}_bf16") and ours.get(f"{config}/{name}"):
                ratios.setdefault(f"ratio/{config}/{name}_bf16_over_fp32", []).append(ours[f"{config}/{name}_bf16"] / ours[f"{config}/{name}"])
        for name in BF16_TARGETS:
            if ours.get(f"{config}/{name}_bf16/at_best_rate") and ours.get(f"{config}/{name}"):
                ratios.setdefault(f"ceiling/{config}/{name}_bf16_over_fp32", []).append(
                    ours[f"{config}/{name}_bf16/at_best_rate"] / ours[f"{config}/{name}"])
            if ours.get(f"{config}/{name}_bf16/at_best_cold_rate") and ours.get(f"{config}/{name}"):
                ratios.setdefault(f"ceiling_cold/{config}/{name}_bf16_over_fp32", []).append(
                    ours[f"{config}/{name}_bf16/at_best_cold_rate"] / ours[f"{config}/{name}"])
        print(json.dumps({"name": f"round/{round_number + 1}/{config}", "preftune": ours, "pytorch": theirs}), file=sys.stderr)

for name, values in ratios.items():
    print(json.dumps({"name": name, "value": round(statistics.median(values), 3), "unit": "x",
                      "rounds": [round(v, 3) for v in values]}))
