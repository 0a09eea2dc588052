#!/usr/bin/env python3
"""make bench-pytorch: the SPEC §7 baselines measured with PyTorch eager on *this* machine.

SPEC §7's PyTorch figures come from one machine; preftune's `make bench` runs on
whatever machine CI or a developer has. This transcription of `resmlp` (SPEC §2,
checked against golden/model_forward_backward.safetensors before it is timed)
measures the same work with PyTorch here, so the two compare on one machine:
- an sft step: forward, MSE to ε, backward, clip at 1.0, AdamW (rows/s);
- a pair step as dpo, rpo and dro take it: forward and backward of both rows
  plus the frozen reference's forward of both rows (pairs/s);
- a kto step: an sft-shaped step plus the frozen reference's forward of its rows, with
  Diffusion-KTO's loss (rows/s);
- dpmpp2m sampling, 20 steps, guidance 1 (samples/s);
for bench-s and bench-m, in fp32 and under torch.autocast("cpu", dtype=torch.bfloat16)
(the same names with a `_bf16` suffix: bf16 products, f32 master weights, optimizer and loss).
Subnormals are flushed, as preftune flushes them: without it PyTorch's β 5000 dpo step runs
about 2× slower on subnormal arithmetic, and every ratio would flatter preftune.
Needs torch and safetensors (not installed by make: torch is large; `pip install torch safetensors`). One JSON object per line.
BENCH_CONFIGS (e.g. "bench-m"), BENCH_ONLY (any of sft_step, pair_step, kto_step, sample_dpmpp2m_20),
BENCH_PRECISIONS (fp32, bf16) and BENCH_SECONDS (per measurement, default 4) narrow a run;
scripts/bench-ratios.py uses them to time each measurement right beside preftune's.
"""
import json, math, os, sys, time

try:
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
    import safetensors  # the golden check below reads the reference model's weights with it
except ImportError as missing:
    sys.exit(f"bench-pytorch: {missing.name} is not installed (pip install torch safetensors)")

torch.set_num_threads(int(os.environ.get("THREADS", "2")))
torch.set_flush_denormal(True)
GOLDEN = os.path.join(os.path.dirname(__file__), "..", "Tests", "Fixtures", "golden", "model_forward_backward.safetensors")


class Block(nn.Module):
    def __init__(self, H, M):
        super().__init__()
        self.norm = nn.LayerNorm(H, eps=1e-5)
        self.mod = nn.Linear(H, 2 * H)
        self.fc1 = nn.Linear(H, M)
        self.fc2 = nn.Linear(M, H)

    def forward(self, h, s):
        scale, shift = self.mod(s).chunk(2, dim=-1)
        u = self.norm(h) * (1 + scale) + shift
        return h + self.fc2(F.silu(self.fc1(u)))


class ResMLP(nn.Module):
    def __init__(self, config):
        super().__init__()
        C, Hs, Ws = config["sample_shape"]
        D, H = C * Hs * Ws, config["hidden"]
        M, Fd = config.get("mlp_ratio", 2) * H, config.get("time_freq_dim", 128)
        self.F = Fd
        self.time_mlp = nn.Sequential(nn.Linear(Fd, H), nn.SiLU(), nn.Linear(H, H))
        self.cond_embed = nn.Embedding(config["cond"]["vocab"], H)
        self.null_cond = nn.Parameter(torch.zeros(H))
        self.in_proj = nn.Linear(D, H)
        self.blocks = nn.ModuleList(Block(H, M) for _ in range(config["depth"]))
        self.out_norm = nn.LayerNorm(H, eps=1e-5)
        self.out_proj = nn.Linear(H, D)

    def time_features(self, t):
        k = torch.arange(self.F // 2, dtype=torch.float32)
        f = torch.exp(-math.log(10000.0) * k / (self.F // 2))
        a = t.float()[:, None] * f[None]
        return torch.cat([torch.cos(a), torch.sin(a)], dim=1)

    def cond_vector(self, ids):
        mask = (ids != 0).float()
        count = mask.sum(1, keepdim=True)
        mean = (self.cond_embed(ids) * mask[..., None]).sum(1) / count.clamp(min=1)
        return torch.where(count > 0, mean, self.null_cond.expand_as(mean))

    def forward(self, x, t, ids):
        e = self.time_mlp(self.time_features(t)) + self.cond_vector(ids)
        s = F.silu(e)
        h = self.in_proj(x)
        for block in self.blocks:
            h = block(h, s)
        return self.out_proj(self.out_norm(h))


def check_against_golden():
    from safetensors.torch import load_file
    from safetensors import safe_open
    with safe_open(GOLDEN, "pt") as f:
        config = json.loads(f.metadata()["config"])
    tensors = load_file(GOLDEN)
    model = ResMLP(config)
    model.load_state_dict({k[len("param."):]: v for k, v in tensors.items() if k.startswith("param.")})
    out = model(tensors["x"], tensors["t"], tensors["cond.ids"].long())
    error = (out - tensors["expected.out"]).abs().max().item()
    assert error < 1e-4, f"the transcription does not match golden: max error {error}"
    return error


def scaled_linear_alphas(T=1000, start=0.00085, end=0.012):
    betas = torch.linspace(start ** 0.5, end ** 0.5, T) ** 2
    return torch.cumprod(1 - betas, 0)


SECONDS = float(os.environ.get("BENCH_SECONDS", "4"))
CONFIGS = set(os.environ.get("BENCH_CONFIGS", "bench-s,bench-m").split(","))
ONLY = set(os.environ.get("BENCH_ONLY", "sft_step,pair_step,kto_step,sample_dpmpp2m_20").split(","))
PRECISIONS = set(os.environ.get("BENCH_PRECISIONS", "fp32,bf16").split(","))


def bench(name, config, batch, seconds=SECONDS, bf16=False):
    C, Hs, Ws = config["sample_shape"]
    D = C * Hs * Ws
    model = ResMLP(config)
    reference = ResMLP(config)
    reference.load_state_dict(model.state_dict())
    for p in reference.parameters():
        p.requires_grad_(False)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    V, L = config["cond"]["vocab"], config["cond"]["max_tokens"]
    ids = torch.randint(1, V, (batch, L))
    x = torch.randn(batch, D)
    t = torch.randint(0, 1000, (batch,))
    eps = torch.randn(batch, D)

    def timed(step, units):
        step(); step()
        count, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            step(); count += 1
        return units * count / (time.perf_counter() - start)

    def product_milliseconds(step, steps=5):
        """Time per step inside the matrix products: the part of PyTorch's step no framework overhead is in."""
        step()
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profiler:
            for _ in range(steps):
                step()
        products = sum(event.self_cpu_time_total for event in profiler.key_averages()
                       if event.key in ("aten::mm", "aten::addmm", "aten::bmm", "aten::_addmm_activation"))
        return products / 1000 / steps

    # bf16: the products in bf16, everything autocast keeps in f32 (weights, optimizer, loss) in f32.
    precision = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if bf16 else (lambda: torch.autocast("cpu", enabled=False))

    def sft_step():
        optimizer.zero_grad(set_to_none=True)
        with precision():
            out = model(x, t, ids)
        loss = F.mse_loss(out.float(), eps)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()

    x2, t2, ids2, eps2 = torch.cat([x, x]), torch.cat([t, t]), torch.cat([ids, ids]), torch.cat([eps, eps])

    def pair_step():
        optimizer.zero_grad(set_to_none=True)
        with precision():
            out = model(x2, t2, ids2).float()
            with torch.no_grad():   # dpo, rpo, dro: the frozen reference's error enters the loss
                ref = reference(x2, t2, ids2).float()
        loss = ((out - eps2) ** 2).mean() - ((ref - eps2) ** 2).mean()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()

    desirable = torch.tensor([1.0 if i % 2 == 0 else -1.0 for i in range(batch)])

    def kto_step():
        """Diffusion-KTO (SPEC §5, utility sigmoid, β 1000, λ 1): g = mse_ref − mse_θ per row,
        z₀ = max(0, mean g) without gradient, L = mean(1 − σ(±β·(g − z₀)))."""
        optimizer.zero_grad(set_to_none=True)
        with precision():
            out = model(x, t, ids).float()
            with torch.no_grad():
                ref = reference(x, t, ids).float()
        g = ((ref - eps) ** 2).mean(dim=1) - ((out - eps) ** 2).mean(dim=1)
        z0 = g.mean().detach().clamp(min=0)
        loss = (1 - torch.sigmoid(desirable * 1000 * (g - z0))).mean()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()

    alphas = scaled_linear_alphas()
    grid = list(range(999, -1, -50))  # 20 steps, as the leading grid of 1000 train steps

    @torch.no_grad()
    def sample():
        """DPM-Solver++(2M), data prediction, first order on the first and last steps."""
        xt = torch.randn(batch, D)
        previous, h_previous = None, None
        for i, step in enumerate(grid):
            with precision():
                eps_hat = model(xt, torch.full((batch,), step), ids).float()
            a = alphas[step]
            alpha, sigma = a.sqrt(), (1 - a).sqrt()
            x0 = (xt - sigma * eps_hat) / alpha
            a_next = alphas[grid[i + 1]] if i + 1 < len(grid) else alphas[0]
            alpha_next, sigma_next = a_next.sqrt(), (1 - a_next).sqrt()
            h = torch.log(alpha_next / sigma_next) - torch.log(alpha / sigma)
            if previous is None or i == len(grid) - 1:
                d = x0
            else:
                r = h_previous / h
                d = x0 + (x0 - previous) / (2 * r)
            xt = (sigma_next / sigma) * xt - alpha_next * torch.expm1(-h) * d
            previous, h_previous = x0, h
        return xt

    suffix = "_bf16" if bf16 else ""
    if "sft_step" in ONLY:
        print(json.dumps({"name": f"pytorch/{name}/sft_step{suffix}", "value": round(timed(sft_step, batch), 1), "unit": "rows/s"}))
        print(json.dumps({"name": f"pytorch/{name}/sft_step{suffix}/products", "value": round(product_milliseconds(sft_step), 2),
                          "unit": "ms", "note": "per step, inside matrix products (aten::mm, addmm, bmm), by torch.profiler"}))
    if "pair_step" in ONLY:
        print(json.dumps({"name": f"pytorch/{name}/pair_step{suffix}", "value": round(timed(pair_step, batch), 1), "unit": "pairs/s",
                          "note": "dpo, rpo, dro: forward and backward of both rows, the reference's forward of both"}))
    if "kto_step" in ONLY:
        print(json.dumps({"name": f"pytorch/{name}/kto_step{suffix}", "value": round(timed(kto_step, batch), 1), "unit": "rows/s",
                          "note": "kto: forward and backward of each row, the reference's forward of each"}))
    if "sample_dpmpp2m_20" in ONLY:
        print(json.dumps({"name": f"pytorch/{name}/sample_dpmpp2m_20{suffix}", "value": round(timed(sample, batch), 1), "unit": "samples/s"}))
    sys.stdout.flush()


error = check_against_golden()
print(json.dumps({"name": "pytorch/transcription_max_error", "value": error, "unit": "abs", "torch": torch.__version__,
                  "threads": torch.get_num_threads()}))
BENCH_S = {"sample_shape": [1, 8, 8], "hidden": 256, "depth": 4, "mlp_ratio": 2, "time_freq_dim": 128,
           "cond": {"kind": "text", "vocab": 1024, "max_tokens": 16}}
BENCH_M = {"sample_shape": [3, 16, 16], "hidden": 512, "depth": 6, "mlp_ratio": 4, "time_freq_dim": 256,
           "cond": {"kind": "text", "vocab": 4096, "max_tokens": 16}}
for bf16 in [precision == "bf16" for precision in ("fp32", "bf16") if precision in PRECISIONS]:
    if "bench-s" in CONFIGS:
        bench("bench-s", BENCH_S, batch=64, bf16=bf16)
    if "bench-m" in CONFIGS:
        bench("bench-m", BENCH_M, batch=128, bf16=bf16)
