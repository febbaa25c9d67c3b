"""PyTorch's scaled_dot_product_attention (causal, GQA) timed per backend on the shapes of
FlashAttention.DISABLED_Bench (tests/cuda/test_cuda_flash_attention.cpp), for a side-by-side
view of what attention kernels reach on this GPU. Same FLOP counts: forward 4 P hd nh,
backward 10 P hd nh, P = B * L (L + 1) / 2 visible pairs.
  python3 bench/sdpa_peer.py
"""
import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

SHAPES = [  # (docs, doc_len, nh, nkv, hd)
    (4, 2048, 32, 8, 128), (4, 2048, 32, 8, 64), (16, 512, 32, 8, 128), (2, 2048, 32, 8, 128),
    (1, 16384, 32, 8, 128), (1, 32768, 32, 8, 128)]
BACKENDS = [("flash", SDPBackend.FLASH_ATTENTION), ("cudnn", SDPBackend.CUDNN_ATTENTION),
            ("efficient", SDPBackend.EFFICIENT_ATTENTION)]


def timed(fn, reps=20):
    for _ in range(3):
        fn()
    start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(reps):
        fn()
    stop.record()
    torch.cuda.synchronize()
    return start.elapsed_time(stop) / reps


for b, L, nh, nkv, hd in SHAPES:
    g = torch.Generator(device="cuda").manual_seed(0)
    q = torch.randn(b, nh, L, hd, device="cuda", dtype=torch.bfloat16, generator=g).requires_grad_()
    k = torch.randn(b, nkv, L, hd, device="cuda", dtype=torch.bfloat16, generator=g).requires_grad_()
    v = torch.randn(b, nkv, L, hd, device="cuda", dtype=torch.bfloat16, generator=g).requires_grad_()
    pairs = b * L * (L + 1) / 2
    ff, bf = 4 * pairs * hd * nh, 10 * pairs * hd * nh
    for name, be in BACKENDS:
        try:
            with sdpa_kernel([be]):
                o = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
                do = torch.randn_like(o)
                fwd = timed(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True,
                                                                   enable_gqa=True))
                both = timed(lambda: torch.autograd.grad(
                    F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True),
                    (q, k, v), do))
            bwd = both - fwd
            print(f"[sdpa {name}] {b} docs x {L} nh {nh} nkv {nkv} hd {hd}: forward {fwd:.3f} ms "
                  f"{ff / (fwd * 1e9):.1f} TFLOP/s, backward {bwd:.3f} ms {bf / (bwd * 1e9):.1f} TFLOP/s",
                  flush=True)
        except Exception as e:  # a backend that does not take this shape
            print(f"[sdpa {name}] {b} docs x {L} hd {hd}: unavailable ({type(e).__name__}: "
                  f"{str(e).splitlines()[0][:120]})", flush=True)
