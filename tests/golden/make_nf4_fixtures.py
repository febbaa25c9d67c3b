#!/usr/bin/env python3
"""Writes the NF4 (QLoRA) fixtures in tests/golden/fixtures/nf4/ with bitsandbytes itself.

1. nf4_quant.safetensors: a few tensors quantized by bitsandbytes.functional.quantize_4bit
   (quant_type "nf4", blocksize 64), without and with double quantization
   (compress_statistics=True), and what bnb's dequantize_4bit gives back. Per case NAME:
     NAME.input            the input (F32, BF16 or F16)
     NAME.packed           U8 [ceil(n/2)]           (single quantization)
     NAME.absmax           F32 [nblocks]
     NAME.dequant          F32 [n]                  bnb dequantize_4bit(..., dtype float32)
     NAME.dq.packed        U8 [ceil(n/2)]           (double quantization)
     NAME.dq.absmax        U8 [nblocks]
     NAME.dq.nested_absmax F32 [ceil(nblocks/256)]
     NAME.dq.nested_offset F32 [1]
     NAME.dq.dequant       F32 [n]
   plus nf4_code F32 [16] and dynamic_map F32 [256] (bnb's quant_map and nested_quant_map).
2. bnb4bit_tiny/: a tiny random Llama saved by transformers with
   BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
   bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=bfloat16): config.json and
   model.safetensors exactly as save_pretrained writes them, and reference.safetensors with, per
   projection P (HF name without ".weight"), P.original (the bf16 weight before quantization) and
   P.dequant (bnb's dequantize_4bit of the saved state, bf16).
3. With --dynamic-map-header PATH: the dynamic map as the C++ table src/core/nf4_dynamic_map.h.

bnb's CUDA kernels made the checkpoints people download, so run this where a GPU is (the
device machine; the bitsandbytes wheel travels as in the README of the device tool). Without a
GPU bnb quantizes on the CPU, whose 8-bit path rounds through a 65536-entry table and so does
not reproduce CUDA's double quantization; the script refuses unless --allow-cpu is given.
The metadata of every file records the bnb version and the device.

Usage: python tests/golden/make_nf4_fixtures.py [--out DIR] [--allow-cpu]
                                                [--dynamic-map-header PATH]
"""
import argparse
import json
import os
import shutil
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import torch  # noqa: E402
from safetensors.torch import load_file, save_file  # noqa: E402

import bitsandbytes as bnb  # noqa: E402
import bitsandbytes.functional as BF  # noqa: E402

PROJ = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
        "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"]


def quant_cases(gen):
    """(name, tensor) pairs: shapes with and without a partial block, every input dtype, a block
    of zeros, an outlier per block, values on the NF4 thresholds, scales that vary by row."""
    cases = []
    a = torch.randn(64, 128, generator=gen) * 0.02
    cases.append(("f32_64x128", a))
    b = torch.randn(96, 200, generator=gen) * 0.05  # 19200 = 300 blocks: a partial nested block
    b.view(-1)[640:704] = 0.0  # block 10 is all zeros (bnb CUDA: codes 0, absmax 0)
    b[10, 5] = 1.5  # an outlier
    cases.append(("bf16_96x200", b.to(torch.bfloat16)))
    c = torch.randn(3, 37, generator=gen)  # 111 elements: an odd count, a partial 4-bit block
    cases.append(("f16_3x37", c.to(torch.float16)))
    d = torch.randn(128, 192, generator=gen) * torch.logspace(-3, 0, 128).unsqueeze(1)
    cases.append(("f32_128x192", d))  # 384 blocks: 2 nested blocks, scales over 3 decades
    # Values exactly on the thresholds of a block whose absmax is 1 (ties take the lower code).
    code = BF.get_4bit_type("nf4", device="cpu")
    mids = (code[:-1] + code[1:]) / 2
    e = torch.zeros(128)
    e[0] = 1.0
    e[1:16] = mids
    e[16:31] = -mids
    e[31:64] = torch.linspace(-1, 1, 33)
    e[64:] = torch.randn(64, generator=gen)
    cases.append(("f32_ties", e.view(2, 64)))
    return cases


def make_quant_fixture(out: Path, device: str, meta: dict):
    gen = torch.Generator().manual_seed(1234)
    tensors = {}
    for name, x in quant_cases(gen):
        xd = x.to(device)
        tensors[f"{name}.input"] = x.contiguous()
        for dq, prefix in ((False, name), (True, name + ".dq")):
            packed, st = BF.quantize_4bit(xd, blocksize=64, compress_statistics=dq,
                                          quant_type="nf4")
            deq = BF.dequantize_4bit(packed, st, quant_type="nf4").float()
            tensors[f"{prefix}.packed"] = packed.reshape(-1).cpu().contiguous()
            tensors[f"{prefix}.absmax"] = st.absmax.reshape(-1).cpu().contiguous()
            tensors[f"{prefix}.dequant"] = deq.reshape(-1).cpu().contiguous()
            if dq:
                tensors[f"{prefix}.nested_absmax"] = st.state2.absmax.reshape(-1).cpu().contiguous()
                tensors[f"{prefix}.nested_offset"] = st.offset.reshape(1).float().cpu().contiguous()
                tensors.setdefault("dynamic_map", st.state2.code.float().cpu().contiguous())
            tensors.setdefault("nf4_code", st.code.float().cpu().contiguous())
    save_file(tensors, str(out / "nf4_quant.safetensors"), metadata=meta)


def make_checkpoint(out: Path, device: str, meta: dict):
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig, LlamaConfig

    cfg = LlamaConfig(vocab_size=256, hidden_size=64, intermediate_size=160, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                      max_position_embeddings=512, rms_norm_eps=1e-5, tie_word_embeddings=False)
    torch.manual_seed(7)
    model = AutoModelForCausalLM.from_config(cfg, dtype=torch.bfloat16)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if n.endswith("norm.weight"):
                p.copy_(1 + 0.1 * torch.randn_like(p.float()))
            else:
                p.copy_(torch.randn_like(p.float()) * 0.1)
    originals = {n[: -len(".weight")]: p.detach().clone() for n, p in model.named_parameters()
                 if any(n.endswith(pr + ".weight") for pr in PROJ)}
    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        qc = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                bnb_4bit_use_double_quant=True,
                                bnb_4bit_compute_dtype=torch.bfloat16)
        qmodel = AutoModelForCausalLM.from_pretrained(tmp, quantization_config=qc,
                                                      dtype=torch.bfloat16, device_map=device)
        dest = out / "bnb4bit_tiny"
        if dest.exists():
            shutil.rmtree(dest)
        qmodel.save_pretrained(str(dest), safe_serialization=True)
    for extra in ("generation_config.json", "README.md"):
        (dest / extra).unlink(missing_ok=True)
    ref = {}
    saved = load_file(str(dest / "model.safetensors"))
    modules = dict(qmodel.named_modules())
    for prefix, orig in originals.items():
        w = modules[prefix].weight
        assert isinstance(w, bnb.nn.Params4bit), prefix
        ref[prefix + ".original"] = orig.cpu().contiguous()
        ref[prefix + ".dequant"] = BF.dequantize_4bit(w.data, w.quant_state).cpu().contiguous()
        assert torch.equal(saved[prefix + ".weight"].cpu(), w.data.cpu()), prefix
    save_file(ref, str(dest / "reference.safetensors"), metadata=meta)


def write_header(path: Path, dyn: torch.Tensor, meta: dict):
    vals = [float(v) for v in dyn.float().tolist()]
    lines = [",".join(f" {float.hex(v)}f" for v in vals[i:i + 4])
             for i in range(0, 256, 4)]
    text = (
        "// bitsandbytes' signed 8-bit dynamic map (functional.create_dynamic_map(signed=True)),\n"
        "// the code of the double-quantized NF4 block scales, as exact hex floats. Generated by\n"
        f"// tests/golden/make_nf4_fixtures.py (bitsandbytes {meta['bitsandbytes']}); test_nf4\n"
        "// compares it with the nested_quant_map bitsandbytes writes.\n"
        "#pragma once\n#include <array>\n\nnamespace ftune::nf4 {\n"
        "inline constexpr std::array<float, 256> kDynamicMap = {\n"
        + "\n".join("   " + ln + "," for ln in lines) + "\n};\n}  // namespace ftune::nf4\n")
    path.write_text(text)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=str(Path(__file__).parent / "fixtures" / "nf4"))
    ap.add_argument("--allow-cpu", action="store_true")
    ap.add_argument("--dynamic-map-header")
    ap.add_argument("--skip-checkpoint", action="store_true")
    args = ap.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu" and not args.allow_cpu:
        raise SystemExit("no GPU: bnb's CPU path differs from its CUDA kernels (see the docstring);"
                         " pass --allow-cpu to write CPU fixtures anyway")
    meta = {"format": "pt", "bitsandbytes": bnb.__version__, "torch": torch.__version__,
            "device": device if device == "cpu" else torch.cuda.get_device_name(0)}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    make_quant_fixture(out, device, meta)
    if not args.skip_checkpoint:
        make_checkpoint(out, device, meta)
    if args.dynamic_map_header:
        write_header(Path(args.dynamic_map_header), BF.create_dynamic_map(signed=True), meta)
    (out / "manifest.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    print(json.dumps(meta))


if __name__ == "__main__":
    main()
