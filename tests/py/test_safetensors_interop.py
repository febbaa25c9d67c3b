#!/usr/bin/env python3
"""safetensors interoperability between ftune and the Python `safetensors` package.

Files written by `safetensors` (numpy API, plus BF16 through TensorSpec since numpy has no
bfloat16) must read back in ftune (tests/tools/safetensors_tool read) with the same names,
dtypes, shapes, offsets and values; files written by ftune's writer must load in
`safetensors.numpy.load_file` / `safetensors.deserialize` with equal values; corrupt files must
be rejected by both. Expected values are computed here with numpy, independently of ftune.

Run: FTUNE_BIN=<build dir> FTUNE_SRC=<source dir> python3 tests/py/test_safetensors_interop.py
"""
import json
import os
import struct
import subprocess
import sys
import tempfile
import traceback

import numpy as np
import safetensors
from safetensors import safe_open
from safetensors.numpy import load_file, save_file

TOOL = os.path.join(os.environ.get("FTUNE_BIN", "build"), "tools", "safetensors_tool")


def run_tool(*args, expect_ok=True):
    r = subprocess.run([TOOL, *args], capture_output=True, text=True)
    if expect_ok and r.returncode != 0:
        raise AssertionError(f"safetensors_tool {args} failed ({r.returncode}): {r.stderr}")
    return r


def bf16_bits(values_f32):
    """Round-to-nearest-even f32 -> bf16 bit patterns (as torch does), computed in numpy."""
    u = np.asarray(values_f32, dtype=np.float32).view(np.uint32).astype(np.uint64)
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)


def bf16_to_f32(bits):
    return (np.asarray(bits, dtype=np.uint32) << 16).view(np.float32)


def header_of(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        return n, f.read(n)


def sample_arrays(rng):
    """One array per numpy-representable safetensors dtype, incl. 0-d and empty tensors."""
    return {
        "f64": rng.standard_normal((3, 2)),
        "f32": rng.standard_normal((4, 5)).astype(np.float32),
        "f16": (rng.standard_normal(7) * 100).astype(np.float16),
        "i64": np.array([-(2**62), 2**40, -1, 0], dtype=np.int64),
        "i32": rng.integers(-(2**31), 2**31 - 1, size=(2, 3), dtype=np.int32),
        "i16": np.array([-32768, 32767, 5], dtype=np.int16),
        "i8": np.array([[-128, 127], [0, -5]], dtype=np.int8),
        "u8": np.arange(250, 256, dtype=np.uint8),
        "u16": np.array([65535, 1], dtype=np.uint16),
        "u32": np.array([2**32 - 1, 7], dtype=np.uint32),
        "u64": np.array([2**64 - 1, 3], dtype=np.uint64),
        "bool": np.array([True, False, True]),
        "scalar": np.array(3.25, dtype=np.float32),
        "empty": np.zeros((0, 4), dtype=np.float32),
        "model.layers.0.self_attn.q_proj.weight": rng.standard_normal((8, 8)).astype(np.float32),
    }


def check_read_output(out, arrays, bf16=None):
    """Compares safetensors_tool read output with the arrays that were written."""
    want_names = set(arrays) | set(bf16 or {})
    assert set(out["tensors"]) == want_names, (sorted(out["tensors"]), sorted(want_names))
    for name, a in arrays.items():
        t = out["tensors"][name]
        want_dtype = {"float64": "F64", "float32": "F32", "float16": "F16", "int64": "I64",
                      "int32": "I32", "int16": "I16", "int8": "I8", "uint8": "U8",
                      "uint16": "U16", "uint32": "U32", "uint64": "U64", "bool": "BOOL"}[a.dtype.name]
        assert t["dtype"] == want_dtype, (name, t["dtype"], want_dtype)
        assert t["shape"] == list(a.shape), (name, t["shape"], a.shape)
        got = np.array(t["values"], dtype=a.dtype if a.dtype != np.float16 else np.float32)
        want = a.reshape(-1).astype(got.dtype)
        assert got.shape == want.shape and np.array_equal(got, want), (name, got, want)
    for name, bits in (bf16 or {}).items():
        t = out["tensors"][name]
        assert t["dtype"] == "BF16" and t["shape"] == list(bits.shape), (name, t)
        got = np.array(t["values"], dtype=np.float32)
        assert np.array_equal(got, bf16_to_f32(bits.reshape(-1))), (name, got)


def test_python_numpy_file_reads_in_ftune(tmp):
    arrays = sample_arrays(np.random.default_rng(1))
    path = os.path.join(tmp, "py_numpy.safetensors")
    save_file(arrays, path, metadata={"format": "pt", "origin": "python"})
    out = json.loads(run_tool("read", path).stdout)
    check_read_output(out, arrays)
    assert out["metadata"] == {"format": "pt", "origin": "python"}, out["metadata"]
    # Offsets as the Python writer laid them out (read from its header independently).
    n, raw = header_of(path)
    assert out["data_start"] == 8 + n
    header = json.loads(raw)
    for name in arrays:
        assert out["tensors"][name]["data_offsets"] == header[name]["data_offsets"], name


def test_python_bf16_file_reads_in_ftune(tmp):
    rng = np.random.default_rng(2)
    keep = []  # TensorSpec holds raw pointers: keep the arrays alive
    specs = {}

    def add(name, dtype_name, arr):
        arr = np.array(arr, order="C")  # (ascontiguousarray would make 0-d arrays 1-d)
        keep.append(arr)
        specs[name] = safetensors.TensorSpec(dtype=dtype_name, shape=list(arr.shape),
                                             data_ptr=arr.ctypes.data, data_len=arr.nbytes)

    bf16 = {
        "emb": bf16_bits(rng.standard_normal((5, 3)).astype(np.float32)),
        "bf16_scalar": bf16_bits(np.array(-0.75, dtype=np.float32)).reshape(()),
        "bf16_empty": np.zeros((2, 0), dtype=np.uint16),
    }
    for name, bits in bf16.items():
        add(name, "bfloat16", bits)
    others = {"norm": rng.standard_normal(3).astype(np.float32),
              "ids": np.array([1, 2, 3], dtype=np.int32)}
    for name, a in others.items():
        add(name, a.dtype.name, a)
    path = os.path.join(tmp, "py_bf16.safetensors")
    safetensors.serialize_file(specs, path, metadata={"format": "pt"})
    out = json.loads(run_tool("read", path).stdout)
    check_read_output(out, others, bf16)


def write_spec(tmp, name, spec):
    spec_path = os.path.join(tmp, name + ".json")
    with open(spec_path, "w") as f:
        json.dump(spec, f)
    path = os.path.join(tmp, name + ".safetensors")
    run_tool("write", path, spec_path)
    return path


def test_ftune_file_loads_in_python(tmp):
    rng = np.random.default_rng(3)
    f32 = rng.standard_normal((3, 4)).astype(np.float32)
    # Rounding cases: halfway points (ties to even), subnormals, overflow, negative zero.
    bf_in = np.concatenate([rng.standard_normal(6).astype(np.float32),
                            np.array([1 + 2**-8, 1 + 3 * 2**-8, -0.0, 1e-40, 3.0e38],
                                     dtype=np.float32)])
    f16_in = np.concatenate([(rng.standard_normal(6) * 10).astype(np.float32),
                             np.array([1 + 2**-11, 1 + 3 * 2**-11, 6e-8, 1e-5, 70000.0, -0.0],
                                      dtype=np.float32)])
    ints = np.array([[1, -2, 2**31 - 1], [-(2**31), 0, 42]], dtype=np.int32)
    i64 = np.array([-(2**62), 2**53 + 1], dtype=np.int64)
    u8 = np.array([0, 7, 255], dtype=np.uint8)
    f64 = rng.standard_normal(4)
    bools = np.array([True, False])
    tensors = [  # deliberately not in name order: data follow this order
        ("z_f32", "F32", f32),
        ("b_bf16", "BF16", bf_in),
        ("y_f16", "F16", f16_in),
        ("a_i32", "I32", ints),
        ("u8", "U8", u8),
        ("i64", "I64", i64),
        ("f64", "F64", f64),
        ("flags", "BOOL", bools),
        ("scalar", "F32", np.array(6.25, dtype=np.float32)),
        ("empty", "F16", np.zeros((0, 3), dtype=np.float32)),
    ]
    spec = {"metadata": {"format": "pt", "step": "7"},
            "tensors": [{"name": n, "dtype": d, "shape": list(a.shape),
                         "values": [v.item() for v in a.reshape(-1)]} for n, d, a in tensors]}
    path = write_spec(tmp, "ftune_written", spec)

    # Layout: 8-byte aligned data start, header padded with spaces, data in the given order.
    n, raw = header_of(path)
    assert (8 + n) % 8 == 0, n
    text = raw.decode("utf-8")
    assert text.rstrip(" ").endswith("}") and len(text) - len(text.rstrip(" ")) < 8, repr(text)
    header = json.loads(text)
    offsets = [header[name]["data_offsets"] for name, _, _ in tensors]
    assert offsets[0][0] == 0 and all(a[1] == b[0] for a, b in zip(offsets, offsets[1:])), offsets
    assert os.path.getsize(path) == 8 + n + offsets[-1][1]

    with safe_open(path, framework="numpy") as f:
        assert f.metadata() == {"format": "pt", "step": "7"}, f.metadata()
        assert sorted(f.keys()) == sorted(name for name, _, _ in tensors)

    # Everything numpy can hold, through the standard numpy API (load_file would refuse the
    # whole file: numpy has no bfloat16).
    with safe_open(path, framework="numpy") as f:
        loaded = {name: f.get_tensor(name) for name in f.keys() if name != "b_bf16"}
    with np.errstate(over="ignore"):  # 70000 -> inf in f16 is one of the cases
        f16_want = f16_in.astype(np.float16)
    np_expect = {
        "z_f32": f32, "y_f16": f16_want, "a_i32": ints, "u8": u8, "i64": i64,
        "f64": f64, "flags": bools, "scalar": np.array(6.25, dtype=np.float32),
        "empty": np.zeros((0, 3), dtype=np.float16),
    }
    for name, want in np_expect.items():
        got = loaded[name]
        assert got.dtype == want.dtype and got.shape == want.shape, (name, got.dtype, got.shape)
        assert got.tobytes() == want.tobytes(), (name, got, want)  # bit-exact, -0.0 too
    # BF16 through the raw deserializer: bit patterns must match numpy's round-to-nearest-even.
    with open(path, "rb") as fh:
        raw_tensors = dict(safetensors.deserialize(fh.read()))
    bf = raw_tensors["b_bf16"]
    assert bf["dtype"] == "BF16" and bf["shape"] == [len(bf_in)], bf
    got_bits = np.frombuffer(bytes(bf["data"]), dtype=np.uint16)
    assert np.array_equal(got_bits, bf16_bits(bf_in)), (got_bits, bf16_bits(bf_in))


def test_ftune_copy_round_trips_python_file(tmp):
    arrays = sample_arrays(np.random.default_rng(4))
    src = os.path.join(tmp, "copy_src.safetensors")
    dst = os.path.join(tmp, "copy_dst.safetensors")
    save_file(arrays, src, metadata={"format": "pt", "k": "v"})
    run_tool("copy", src, dst)
    back = load_file(dst)
    assert sorted(back) == sorted(arrays)
    for name, a in arrays.items():
        assert back[name].dtype == a.dtype and back[name].shape == a.shape, name
        assert np.array_equal(back[name], a), name
    with safe_open(dst, framework="numpy") as f:
        assert f.metadata() == {"format": "pt", "k": "v"}


def test_corrupt_files_rejected_by_both(tmp):
    arrays = {"a": np.arange(6, dtype=np.float32), "b": np.ones(2, dtype=np.float32)}
    good = os.path.join(tmp, "good.safetensors")
    save_file(arrays, good)
    data = open(good, "rb").read()
    cases = {
        "truncated": (data[:-3], "runs past the end of file"),
        "trailing": (data + b"\0" * 4, "4 trailing bytes after the last tensor"),
        "tiny": (data[:5], "shorter than the 8-byte"),
    }
    for name, (blob, message) in cases.items():
        path = os.path.join(tmp, name + ".safetensors")
        with open(path, "wb") as fh:
            fh.write(blob)
        r = run_tool("read", path, expect_ok=False)
        assert r.returncode == 1, (name, r.returncode, r.stdout)
        assert path in r.stderr and message in r.stderr, (name, r.stderr)
        try:
            load_file(path)
        except Exception:
            pass
        else:
            raise AssertionError(f"python safetensors accepted the {name} file")


def main():
    if not os.path.exists(TOOL):
        print(f"FAILED: {TOOL} not built (cmake --build <dir> --target safetensors_tool)")
        return 1
    tests = [v for k, v in sorted(globals().items()) if k.startswith("test_") and callable(v)]
    failed = 0
    with tempfile.TemporaryDirectory(prefix="ftune_st_interop_") as tmp:
        for t in tests:
            try:
                t(tmp)
                print(f"ok   {t.__name__}")
            except Exception:
                failed += 1
                print(f"FAIL {t.__name__}")
                traceback.print_exc()
    print(f"test_safetensors_interop: {len(tests) - failed} passed, {failed} failed "
          f"(safetensors {safetensors.__version__}, numpy {np.__version__})")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
