#!/usr/bin/env python3
"""`ftune merge` and `ftune export --format gguf` read back with the real tools.

A tiny random Llama (hidden 256, so Q4_K/Q6_K blocks of 256 fit its rows; llama3 RoPE scaling;
untied lm_head), a tiny Qwen2 (hidden 128, so q4_k_m takes llama.cpp's Q5_0/Q8_0 fallbacks; q/k/v
biases, tied embeddings) and random PEFT adapters for them
are made here with numpy and the `safetensors` package, with the small Llama-3-style tokenizer in
assets/tokenizer. Then:

merge: every tensor of the merged folder, loaded with safetensors.numpy over the shards that
  model.safetensors.index.json names, must equal numpy's W + (alpha/r) * B @ A (fp32: rel 1e-5;
  --dtype fp16: within fp16 rounding, 2^-10 relative); the index's total_size must be the sum
  of the tensor bytes and config.json's torch_dtype the chosen dtype.
export: gguf.GGUFReader must find the llama.* / qwen2.* hyperparameters and tokenizer.* keys
  with the values of config.json and tokenizer.json, every tensor under llama.cpp's name with the
  shape (ne order) and the ggml type llama.cpp's rules give, and values that, dequantized by
  gguf.quants.dequantize, match the merged weights, after the q/k permutation computed here
  from llama.cpp's description (per head, rows [0, d/2) and [d/2, d) interleaved), within:
    F32 exact; F16 2^-10 relative; BF16 2^-8 relative; Q8_0 per 32-block |err| <= amax/254 +
    amax*2^-10; Q5_0 relative L2 <= 0.06; Q4_K relative L2 <= 0.10; Q6_K relative L2 <= 0.03
  (Gaussian weights: 4-bit K-quants give about 0.07, 6-bit about 0.02).
sentencepiece: a Llama-2-style tokenizer.json (byte fallback, <unk>/<s>/</s>, <0xXX> bytes) gives
  tokenizer.ggml.model "llama" with UNKNOWN/CONTROL/BYTE/NORMAL/UNUSED types, scores, unk id and
  add_space_prefix.

Run: FTUNE_BIN=<build dir> FTUNE_SRC=<source dir> python3 tests/py/test_merge_export.py
"""
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np
from gguf import GGUFReader, GGMLQuantizationType as Q
from gguf.quants import dequantize
from safetensors.numpy import load_file, save_file

FTUNE = os.path.join(os.environ.get("FTUNE_BIN", "build"), "ftune")
SRC = os.environ.get("FTUNE_SRC", ".")
PROJ = [("self_attn", "q_proj"), ("self_attn", "k_proj"), ("self_attn", "v_proj"), ("self_attn", "o_proj"),
        ("mlp", "gate_proj"), ("mlp", "up_proj"), ("mlp", "down_proj")]
GGUF_PROJ = {"q_proj": "attn_q", "k_proj": "attn_k", "v_proj": "attn_v", "o_proj": "attn_output",
             "gate_proj": "ffn_gate", "up_proj": "ffn_up", "down_proj": "ffn_down"}

passed, failed = 0, 0


def check(cond, what):
    global passed, failed
    if cond:
        passed += 1
    else:
        failed += 1
        print("FAILED:", what)


def make_model(d, arch, rng, H=256, F=512, V=1024):
    """An HF folder with random weights; returns (config, {name: array})."""
    L, nh, nkv = 3, 4, 2
    hd = H // nh
    cfg = {"architectures": ["LlamaForCausalLM" if arch == "llama" else "Qwen2ForCausalLM"],
           "model_type": arch, "vocab_size": V, "hidden_size": H, "intermediate_size": F,
           "num_hidden_layers": L, "num_attention_heads": nh, "num_key_value_heads": nkv,
           "max_position_embeddings": 2048, "rms_norm_eps": 1e-5, "rope_theta": 500000.0,
           "tie_word_embeddings": arch != "llama", "hidden_act": "silu", "torch_dtype": "float32",
           "bos_token_id": 1008, "eos_token_id": 1009}
    if arch == "llama":
        cfg["rope_scaling"] = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                               "high_freq_factor": 4.0, "original_max_position_embeddings": 64}
    t = {"model.embed_tokens.weight": rng.standard_normal((V, H)).astype(np.float32) * 0.02,
         "model.norm.weight": (1 + 0.1 * rng.standard_normal(H)).astype(np.float32)}
    if arch == "llama":
        t["lm_head.weight"] = rng.standard_normal((V, H)).astype(np.float32) * 0.02
    shapes = {"q_proj": (nh * hd, H), "k_proj": (nkv * hd, H), "v_proj": (nkv * hd, H),
              "o_proj": (H, nh * hd), "gate_proj": (F, H), "up_proj": (F, H), "down_proj": (H, F)}
    for l in range(L):
        p = f"model.layers.{l}."
        t[p + "input_layernorm.weight"] = (1 + 0.1 * rng.standard_normal(H)).astype(np.float32)
        t[p + "post_attention_layernorm.weight"] = (1 + 0.1 * rng.standard_normal(H)).astype(np.float32)
        for mod, name in PROJ:
            t[p + f"{mod}.{name}.weight"] = rng.standard_normal(shapes[name]).astype(np.float32) * 0.05
            if arch == "qwen2" and name in ("q_proj", "k_proj", "v_proj"):
                t[p + f"{mod}.{name}.bias"] = rng.standard_normal(shapes[name][0]).astype(np.float32) * 0.1
    os.makedirs(d)
    save_file(t, os.path.join(d, "model.safetensors"), metadata={"format": "pt"})
    json.dump(cfg, open(os.path.join(d, "config.json"), "w"), indent=2)
    for f in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(os.path.join(SRC, "assets", "tokenizer", f), d)
    return cfg, t


def make_adapter(d, base, rng, r=8, alpha=16, targets=("q_proj", "k_proj", "v_proj", "o_proj",
                                                            "gate_proj", "up_proj", "down_proj")):
    os.makedirs(d)
    a = {}
    for name, w in base.items():
        mod = name.split(".")[-2]
        if name.endswith(".weight") and mod in targets:
            key = "base_model.model." + name[:-len(".weight")]
            a[key + ".lora_A.weight"] = (rng.standard_normal((r, w.shape[1])) * 0.05).astype(np.float32)
            a[key + ".lora_B.weight"] = (rng.standard_normal((w.shape[0], r)) * 0.05).astype(np.float32)
    save_file(a, os.path.join(d, "adapter_model.safetensors"), metadata={"format": "pt"})
    json.dump({"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": r, "lora_alpha": alpha,
               "target_modules": list(targets), "lora_dropout": 0.0, "bias": "none",
               "use_rslora": False, "use_dora": False, "fan_in_fan_out": False},
              open(os.path.join(d, "adapter_config.json"), "w"))
    return a, alpha / r


def write_sentencepiece_tokenizer(d):
    """A SentencePiece-style tokenizer.json laid out like Llama-2's: <unk>=0 <s>=1 </s>=2,
    <0x00>..<0xFF> = 3..258, then pieces; byte fallback, Prepend/Replace normalizer, BOS template."""
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    for b in range(256):
        vocab[f"<0x{b:02X}>"] = len(vocab)
    pieces = ["▁", "a", "b", "c", "▁a", "▁b", "ab", "▁ab", "bc", "▁abc"]
    for p in pieces:
        vocab[p] = len(vocab)
    merges = ["▁ a", "▁ b", "a b", "▁a b", "b c", "▁ab c"]
    tj = {"version": "1.0", "truncation": None, "padding": None,
          "added_tokens": [{"id": i, "content": c, "single_word": False, "lstrip": False, "rstrip": False,
                            "normalized": False, "special": True} for i, c in enumerate(["<unk>", "<s>", "</s>"])],
          "normalizer": {"type": "Sequence", "normalizers": [{"type": "Prepend", "prepend": "▁"},
                                                             {"type": "Replace", "pattern": {"String": " "}, "content": "▁"}]},
          "pre_tokenizer": None,
          "post_processor": {"type": "TemplateProcessing",
                             "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
                             "pair": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                                      {"SpecialToken": {"id": "<s>", "type_id": 1}}, {"Sequence": {"id": "B", "type_id": 1}}],
                             "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}}},
          "decoder": {"type": "Sequence", "decoders": [{"type": "Replace", "pattern": {"String": "▁"}, "content": " "},
                                                       {"type": "ByteFallback"}, {"type": "Fuse"},
                                                       {"type": "Strip", "content": " ", "start": 1, "stop": 0}]},
          "model": {"type": "BPE", "dropout": None, "unk_token": "<unk>", "continuing_subword_prefix": None,
                    "end_of_word_suffix": None, "fuse_unk": True, "byte_fallback": True, "ignore_merges": False,
                    "vocab": vocab, "merges": merges}}
    json.dump(tj, open(os.path.join(d, "tokenizer.json"), "w"), ensure_ascii=False)
    json.dump({"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "add_bos_token": True,
               "add_eos_token": False, "tokenizer_class": "LlamaTokenizerFast"},
              open(os.path.join(d, "tokenizer_config.json"), "w"))
    return vocab


def check_sentencepiece_export(tmp, rng):
    d = os.path.join(tmp, "llama2")
    cfg, base = make_model(d, "llama", rng, H=128, F=256, V=288)
    vocab = write_sentencepiece_tokenizer(d)
    out = os.path.join(tmp, "llama2.gguf")
    r = run("export", "--model", d, "--out", out, "--type", "q8_0")
    check(r.returncode == 0, "export with a SentencePiece-style tokenizer: " + r.stderr[-1000:])
    if r.returncode != 0:
        return
    rd = GGUFReader(out)
    V = cfg["vocab_size"]
    ids = {i: t for t, i in vocab.items()}
    check(field(rd, "tokenizer.ggml.model") == "llama", "tokenizer.ggml.model llama")
    check("tokenizer.ggml.pre" not in rd.fields and "tokenizer.ggml.merges" not in rd.fields,
          "no pre-tokenizer or merges for the llama (SentencePiece) tokenizer")
    tokens = field(rd, "tokenizer.ggml.tokens")
    check(tokens == [ids.get(i, f"[PAD{i}]") for i in range(V)], "SentencePiece token texts, padded to vocab_size")
    want_types = [2 if i == 0 else 3 if i in (1, 2) else 6 if 3 <= i < 259 else 1 if i in ids else 5
                  for i in range(V)]
    check(list(field(rd, "tokenizer.ggml.token_type")) == want_types,
          "token types: UNKNOWN <unk>, CONTROL <s> </s>, BYTE <0xXX>, NORMAL pieces, UNUSED padding")
    scores = field(rd, "tokenizer.ggml.scores")
    check(all(scores[i] == (-float(i) if want_types[i] == 1 else 0.0) for i in range(V)),
          "scores: -id for pieces (merge order), 0 otherwise")
    for k, v in {"tokenizer.ggml.bos_token_id": 1, "tokenizer.ggml.eos_token_id": 2,
                 "tokenizer.ggml.unknown_token_id": 0, "tokenizer.ggml.add_bos_token": True,
                 "tokenizer.ggml.add_eos_token": False, "tokenizer.ggml.add_space_prefix": True}.items():
        check(field(rd, k) == v, f"{k} = {field(rd, k)!r}, expected {v!r}")


def numpy_merge(base, adapter, scale):
    out = {}
    for name, w in base.items():
        key = "base_model.model." + name[:-len(".weight")] if name.endswith(".weight") else None
        if key and key + ".lora_A.weight" in adapter:
            A, B = adapter[key + ".lora_A.weight"].astype(np.float64), adapter[key + ".lora_B.weight"].astype(np.float64)
            out[name] = (w.astype(np.float64) + scale * (B @ A)).astype(np.float32)
        else:
            out[name] = w
    return out


def run(*args):
    return subprocess.run([FTUNE, *args], capture_output=True, text=True)


def load_merged(d):
    idx_path = os.path.join(d, "model.safetensors.index.json")
    if os.path.exists(idx_path):
        idx = json.load(open(idx_path))
        out = {}
        for f in sorted(set(idx["weight_map"].values())):
            part = load_file(os.path.join(d, f))
            for k, v in part.items():
                check(idx["weight_map"].get(k) == f, f"weight_map names {f} for {k}")
                out[k] = v
        return out, idx
    return load_file(os.path.join(d, "model.safetensors")), None


def rel_l2(got, want):
    return float(np.linalg.norm(got.astype(np.float64) - want) / max(np.linalg.norm(want), 1e-30))


def permute(w, n_head):
    """llama.cpp's q/k layout, written from its description: within each head, the rotary pairs
    HF keeps as halves (row i and row i + d/2) become neighbours (rows 2i and 2i + 1)."""
    rows = w.shape[0]
    d = rows // n_head
    out = np.empty_like(w)
    for h in range(n_head):
        for i in range(d // 2):
            out[h * d + 2 * i] = w[h * d + i]
            out[h * d + 2 * i + 1] = w[h * d + d // 2 + i]
    return out


def use_more_bits(i, n):
    return i < n // 8 or i >= 7 * n // 8 or (i - n // 8) % 3 == 2


def expected_type(ftype, name, shape, layer, n_layers, has_output):
    if len(shape) < 2:
        return Q.F32
    cols = shape[-1]
    if ftype == "f16":
        return Q.F16
    if ftype == "bf16":
        return Q.BF16
    if ftype == "q8_0":
        return Q.Q8_0 if cols % 32 == 0 else Q.F16
    t = Q.Q4_K
    if name == "output.weight" or (not has_output and name == "token_embd.weight"):
        t = Q.Q8_0 if cols % 256 else Q.Q6_K
    elif ("attn_v.weight" in name or "ffn_down" in name) and use_more_bits(layer, n_layers):
        t = Q.Q6_K
    if t in (Q.Q4_K, Q.Q6_K) and cols % 256:
        t = Q.Q5_0 if t == Q.Q4_K else Q.Q8_0
    return t


def check_values(name, qt, got, want):
    if qt == Q.F32:
        check(np.array_equal(got, want), f"{name}: F32 exact")
    elif qt == Q.F16:
        err = np.abs(got - want) - 2.0 ** -10 * np.abs(want) - 1e-7
        check(err.max() <= 0, f"{name}: F16 within 2^-10 relative (worst excess {err.max():.3g})")
    elif qt == Q.BF16:
        err = np.abs(got - want) - 2.0 ** -8 * np.abs(want) - 1e-30
        check(err.max() <= 0, f"{name}: BF16 within 2^-8 relative")
    elif qt == Q.Q8_0:
        g, w = got.reshape(-1, 32), want.reshape(-1, 32)
        amax = np.abs(w).max(axis=1, keepdims=True)
        err = np.abs(g - w) - (amax / 254 + amax * 2.0 ** -10 + 1e-9)
        check(err.max() <= 0, f"{name}: Q8_0 per-block error <= amax/254 (worst excess {err.max():.3g})")
    else:
        bound = {Q.Q5_0: 0.06, Q.Q4_K: 0.10, Q.Q6_K: 0.03}[qt]
        e = rel_l2(got, want)
        check(e <= bound, f"{name}: {qt.name} relative L2 {e:.4f} <= {bound}")


def field(reader, key):
    f = reader.fields.get(key)
    return None if f is None else f.contents()


def check_export(tmp, arch, cfg, merged, model_dir, adapter_dir, ftype):
    out = os.path.join(tmp, f"{arch}-{ftype}.gguf")
    r = run("export", "--model", model_dir, "--adapter", adapter_dir, "--out", out, "--format", "gguf",
            "--type", ftype)
    check(r.returncode == 0, f"export {arch} {ftype}: {r.stderr[-1000:]}")
    if r.returncode != 0:
        return
    rd = GGUFReader(out)
    g = "llama" if arch == "llama" else "qwen2"
    nh, nkv, H = cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["hidden_size"]
    L = cfg["num_hidden_layers"]
    hd = H // nh
    want_kv = {"general.architecture": g, f"{g}.context_length": cfg["max_position_embeddings"],
               f"{g}.embedding_length": H, f"{g}.block_count": L,
               f"{g}.feed_forward_length": cfg["intermediate_size"], f"{g}.attention.head_count": nh,
               f"{g}.attention.head_count_kv": nkv, f"{g}.rope.dimension_count": hd,
               f"{g}.vocab_size": cfg["vocab_size"],
               "general.file_type": {"f16": 1, "bf16": 32, "q8_0": 7, "q4_k_m": 15}[ftype]}
    for k, v in want_kv.items():
        check(field(rd, k) == v, f"{arch} {ftype}: {k} = {field(rd, k)!r}, expected {v!r}")
    check(math.isclose(field(rd, f"{g}.rope.freq_base"), cfg["rope_theta"], rel_tol=1e-6), "rope.freq_base")
    check(math.isclose(field(rd, f"{g}.attention.layer_norm_rms_epsilon"), cfg["rms_norm_eps"], rel_tol=1e-6),
          "layer_norm_rms_epsilon")
    # Tokenizer keys against tokenizer.json / tokenizer_config.json.
    tj = json.load(open(os.path.join(model_dir, "tokenizer.json")))
    tc = json.load(open(os.path.join(model_dir, "tokenizer_config.json")))
    vocab = {i: t for t, i in tj["model"]["vocab"].items()}
    added = {a["id"]: a for a in tj["added_tokens"]}
    for a in added.values():
        vocab[a["id"]] = a["content"]
    tokens = field(rd, "tokenizer.ggml.tokens")
    check(field(rd, "tokenizer.ggml.model") == "gpt2", "tokenizer.ggml.model gpt2")
    check(field(rd, "tokenizer.ggml.pre") == "llama-bpe", "tokenizer.ggml.pre llama-bpe (Llama-3 regex)")
    check(len(tokens) == cfg["vocab_size"], "one token per vocabulary id")
    check(all(tokens[i] == vocab.get(i, f"[PAD{i}]") for i in range(len(tokens))), "token texts by id")
    types = field(rd, "tokenizer.ggml.token_type")
    check(all(types[i] == (3 if i in added and added[i]["special"] else 1) for i in range(len(types))),
          "token types: special added tokens CONTROL (3), the rest NORMAL (1)")
    merges = [m if isinstance(m, str) else " ".join(m) for m in tj["model"]["merges"]]
    check(field(rd, "tokenizer.ggml.merges") == merges, "merges")
    ids = {t: i for i, t in vocab.items()}
    check(field(rd, "tokenizer.ggml.bos_token_id") == ids[tc["bos_token"]], "bos id")
    check(field(rd, "tokenizer.ggml.eos_token_id") == ids[tc["eos_token"]], "eos id")
    check(field(rd, "tokenizer.ggml.padding_token_id") == ids[tc["pad_token"]], "pad id")
    check(field(rd, "tokenizer.ggml.add_bos_token") is True, "add_bos_token (TemplateProcessing adds BOS)")
    check(field(rd, "tokenizer.chat_template") == tc["chat_template"], "chat_template")

    # Tensors: names, shapes (ne order), types, values.
    has_output = not cfg["tie_word_embeddings"]
    want = {"token_embd.weight": (merged["model.embed_tokens.weight"], -1),
            "output_norm.weight": (merged["model.norm.weight"], -1)}
    if has_output:
        want["output.weight"] = (merged["lm_head.weight"], -1)
    for l in range(L):
        p = f"model.layers.{l}."
        want[f"blk.{l}.attn_norm.weight"] = (merged[p + "input_layernorm.weight"], l)
        want[f"blk.{l}.ffn_norm.weight"] = (merged[p + "post_attention_layernorm.weight"], l)
        for mod, name in PROJ:
            for kind in ("weight", "bias"):
                hf = p + f"{mod}.{name}.{kind}"
                if hf not in merged:
                    continue
                v = merged[hf]
                if g == "llama" and name == "q_proj":
                    v = permute(v, nh)
                if g == "llama" and name == "k_proj":
                    v = permute(v, nkv)
                want[f"blk.{l}.{GGUF_PROJ[name]}.{kind}"] = (v, l)
    if arch == "llama":  # llama3 RoPE: per-frequency divisors, llama.cpp's rope_freqs
        rs = cfg["rope_scaling"]
        inv = 1.0 / (cfg["rope_theta"] ** (np.arange(0, hd, 2) / hd))
        wl = 2 * np.pi / inv
        orig = rs["original_max_position_embeddings"]
        lo, hi = orig / rs["low_freq_factor"], orig / rs["high_freq_factor"]
        smooth = (orig / wl - rs["low_freq_factor"]) / (rs["high_freq_factor"] - rs["low_freq_factor"])
        fac = np.where(wl < hi, 1.0, np.where(wl > lo, rs["factor"], 1 / ((1 - smooth) / rs["factor"] + smooth)))
        want["rope_freqs.weight"] = (fac.astype(np.float32), -1)
    got_names = [t.name for t in rd.tensors]
    check(sorted(got_names) == sorted(want), f"{arch} {ftype}: tensor names {sorted(set(got_names) ^ set(want))}")
    for t in rd.tensors:
        if t.name not in want:
            continue
        w, layer = want[t.name]
        check(list(t.shape) == list(reversed(w.shape)), f"{t.name}: shape (ne order) {list(t.shape)}")
        qt = expected_type(ftype, t.name, w.shape, layer, L, has_output)
        check(t.tensor_type == qt, f"{arch} {ftype} {t.name}: type {t.tensor_type.name}, expected {qt.name}")
        got = np.asarray(dequantize(t.data, t.tensor_type), dtype=np.float32).reshape(w.shape)
        check_values(f"{arch} {ftype} {t.name}", t.tensor_type, got, w.astype(np.float32))


def main():
    rng = np.random.default_rng(1234)
    with tempfile.TemporaryDirectory() as tmp:
        cfg, base = make_model(os.path.join(tmp, "llama"), "llama", rng)
        adapter, scale = make_adapter(os.path.join(tmp, "adapter"), base, rng)
        want = numpy_merge(base, adapter, scale)

        # fp32, forced into several shards.
        out = os.path.join(tmp, "merged")
        r = run("merge", "--model", os.path.join(tmp, "llama"), "--adapter", os.path.join(tmp, "adapter"),
                "--out", out, "--max-shard-size", "1MB")
        check(r.returncode == 0, "merge exit code 0: " + r.stderr[-2000:])
        got, idx = load_merged(out)
        check(idx is not None and len(set(idx["weight_map"].values())) > 2, "several shards with an index")
        shard_files = sorted(f for f in os.listdir(out) if f.endswith(".safetensors"))
        n = len(shard_files)
        check(shard_files == [f"model-{i:05d}-of-{n:05d}.safetensors" for i in range(1, n + 1)], "shard names")
        for f in shard_files:  # a tensor larger than the limit gets a shard of its own (transformers)
            part = load_file(os.path.join(out, f))
            size = sum(v.nbytes for v in part.values())
            check(size <= 1_000_000 or len(part) == 1, f"{f}: {size} bytes within --max-shard-size")
        if idx:
            check(idx["metadata"]["total_size"] == sum(v.nbytes for v in got.values()), "index total_size")
        check(sorted(got) == sorted(want), "merged folder holds every base tensor")
        for k, v in want.items():
            if k in got:
                e = np.abs(got[k].astype(np.float64) - v) - 1e-5 * np.abs(v) - 1e-7
                check(got[k].dtype == np.float32 and e.max() <= 0, f"fp32 merge of {k}")
        mcfg = json.load(open(os.path.join(out, "config.json")))
        check(mcfg["torch_dtype"] == "float32" and mcfg["rope_scaling"] == cfg["rope_scaling"], "config.json")
        for f in ("tokenizer.json", "tokenizer_config.json", "generation_config.json"):
            check(os.path.exists(os.path.join(out, f)), f"{f} in the merged folder")
        gen = json.load(open(os.path.join(out, "generation_config.json")))
        check(gen.get("bos_token_id") == 1008 and gen.get("eos_token_id") == 1009, "generation_config ids")

        # fp16 output, one file.
        out16 = os.path.join(tmp, "merged16")
        r = run("merge", "--model", os.path.join(tmp, "llama"), "--adapter", os.path.join(tmp, "adapter"),
                "--out", out16, "--dtype", "fp16")
        check(r.returncode == 0, "merge --dtype fp16: " + r.stderr[-2000:])
        got16, idx16 = load_merged(out16)
        check(idx16 is None, "one model.safetensors under the default 5GB shard size")
        for k, v in want.items():
            e = np.abs(got16[k].astype(np.float64) - v) - 2.0 ** -11 * np.abs(v) - 6e-8
            check(got16[k].dtype == np.float16 and e.max() <= 0, f"fp16 merge of {k}")
        check(json.load(open(os.path.join(out16, "config.json")))["torch_dtype"] == "float16", "fp16 torch_dtype")

        for t in ("f16", "bf16", "q8_0", "q4_k_m"):
            check_export(tmp, "llama", cfg, want, os.path.join(tmp, "llama"), os.path.join(tmp, "adapter"), t)

        # Rows of 128 and 352 elements: q4_k_m falls back to Q5_0 (for Q4_K) and Q8_0 (for Q6_K).
        qcfg, qbase = make_model(os.path.join(tmp, "qwen2"), "qwen2", rng, H=128, F=352)
        qadapter, qscale = make_adapter(os.path.join(tmp, "qadapter"), qbase, rng, r=4, alpha=8,
                                        targets=("q_proj", "v_proj", "down_proj"))
        qwant = numpy_merge(qbase, qadapter, qscale)
        for t in ("f16", "q4_k_m"):
            check_export(tmp, "qwen2", qcfg, qwant, os.path.join(tmp, "qwen2"), os.path.join(tmp, "qadapter"), t)

        check_sentencepiece_export(tmp, rng)

    print("merge export: %d passed, %d failed" % (passed, failed))
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
