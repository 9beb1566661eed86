"""ggml's own quantizers as a test oracle, through ctypes.

llama-cpp-python bundles `libggml-base.so`, which exports the reference quantizers that
llama-quantize runs:

* `size_t ggml_quantize_chunk(enum ggml_type, const float *src, void *dst, int64_t start,
  int64_t nrows, int64_t n_per_row, const float *imatrix)` quantizes whole rows;
* `size_t ggml_row_size(enum ggml_type, int64_t ne)` gives the bytes of one row;
* `const struct ggml_type_traits *ggml_get_type_traits(enum ggml_type)` whose
  `to_float(const void *, float *, int64_t)` dequantizes.

    ref = GgmlRef()                                 # finds the library (or GGML_BASE_LIB)
    raw = ref.quantize(rows, "Q4_K", importance)    # rows: (n_rows, n_per_row) float32
    back = ref.dequantize(raw, "Q4_K", rows.size)   # float32, flat
"""
from __future__ import annotations

import ctypes
import os
from pathlib import Path

import numpy as np

# ggml type ids (ggml.h enum ggml_type), as GGUF stores them.
TYPE_IDS = {
    "F32": 0, "F16": 1, "Q4_0": 2, "Q4_1": 3, "Q5_0": 6, "Q5_1": 7, "Q8_0": 8,
    "Q2_K": 10, "Q3_K": 11, "Q4_K": 12, "Q5_K": 13, "Q6_K": 14, "BF16": 30,
}
# The i-quants, by id (tests/oracle/test_iquants.py passes these ints: the smoke check
# below runs every TYPE_IDS entry without an imatrix, which some of these refuse).
IQ_TYPE_IDS = {
    "IQ2_XXS": 16, "IQ2_XS": 17, "IQ3_XXS": 18, "IQ1_S": 19, "IQ4_NL": 20, "IQ3_S": 21,
    "IQ2_S": 22, "IQ4_XS": 23, "IQ1_M": 29,
}


class _TypeTraits(ctypes.Structure):
    """Leading fields of ggml.h's `struct ggml_type_traits` (we only read up to to_float)."""
    _fields_ = [
        ("type_name", ctypes.c_char_p),
        ("blck_size", ctypes.c_int64),
        ("blck_size_interleave", ctypes.c_int64),
        ("type_size", ctypes.c_size_t),
        ("is_quantized", ctypes.c_bool),
        ("to_float", ctypes.c_void_p),
        ("from_float_ref", ctypes.c_void_p),
    ]


_ToFloat = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64)


def find_library() -> Path:
    """`$GGML_BASE_LIB`, else the copy inside the installed llama_cpp package."""
    env = os.environ.get("GGML_BASE_LIB")
    if env:
        return Path(env)
    import llama_cpp  # the oracle venv's llama-cpp-python (scripts/setup_llama_cpp.sh)

    lib = Path(llama_cpp.__file__).parent / "lib" / "libggml-base.so"
    if not lib.exists():
        raise FileNotFoundError(f"no libggml-base.so in {lib.parent}")
    return lib


def _type_id(ty: str | int) -> int:
    return ty if isinstance(ty, int) else TYPE_IDS[ty]


def _ptr(a: np.ndarray) -> ctypes.c_void_p:
    return ctypes.c_void_p(a.ctypes.data)


class GgmlRef:
    def __init__(self, path: Path | str | None = None):
        self.path = Path(path) if path else find_library()
        lib = ctypes.CDLL(str(self.path))
        lib.ggml_quantize_chunk.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64,
                                            ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p]
        lib.ggml_quantize_chunk.restype = ctypes.c_size_t
        lib.ggml_row_size.argtypes = [ctypes.c_int, ctypes.c_int64]
        lib.ggml_row_size.restype = ctypes.c_size_t
        lib.ggml_get_type_traits.argtypes = [ctypes.c_int]
        lib.ggml_get_type_traits.restype = ctypes.POINTER(_TypeTraits)
        lib.ggml_quantize_requires_imatrix.argtypes = [ctypes.c_int]
        lib.ggml_quantize_requires_imatrix.restype = ctypes.c_bool
        self._lib = lib

    def requires_imatrix(self, ty: str | int) -> bool:
        """ggml_quantize_requires_imatrix: ggml aborts (GGML_ASSERT) on such a type without one."""
        return bool(self._lib.ggml_quantize_requires_imatrix(_type_id(ty)))

    def row_size(self, ty: str | int, n_per_row: int) -> int:
        return int(self._lib.ggml_row_size(_type_id(ty), n_per_row))

    def block_size(self, ty: str | int) -> int:
        return int(self._lib.ggml_get_type_traits(_type_id(ty)).contents.blck_size)

    def quantize(self, rows: np.ndarray, ty: str | int, importance: np.ndarray | None = None) -> bytes:
        """ggml's quantization of a (n_rows, n_per_row) array, as llama-quantize would write it.
        `importance` (n_per_row,) is passed as the imatrix row."""
        rows = np.ascontiguousarray(rows, dtype=np.float32)
        if rows.ndim != 2:
            raise ValueError("rows must be 2-D (n_rows, n_per_row)")
        n_rows, n = rows.shape
        out = np.zeros(self.row_size(ty, n) * n_rows, dtype=np.uint8)
        imp = None
        if importance is not None:
            importance = np.ascontiguousarray(importance, dtype=np.float32)
            if importance.shape != (n,):
                raise ValueError(f"importance must have shape ({n},), got {importance.shape}")
            imp = _ptr(importance)
        elif self.requires_imatrix(ty):
            raise ValueError(f"ggml needs an imatrix for {ty} (it would abort the process)")
        written = self._lib.ggml_quantize_chunk(_type_id(ty), _ptr(rows), _ptr(out), 0, n_rows, n, imp)
        if written != out.size:
            raise RuntimeError(f"ggml_quantize_chunk wrote {written} bytes, expected {out.size}")
        return out.tobytes()

    def dequantize(self, raw: bytes, ty: str | int, n_elements: int) -> np.ndarray:
        """ggml's to_float of `raw` (F32 has no to_float: its bytes are the values)."""
        tid = _type_id(ty)
        if tid == TYPE_IDS["F32"]:
            return np.frombuffer(raw, dtype="<f4", count=n_elements).copy()
        traits = self._lib.ggml_get_type_traits(tid).contents
        if not traits.to_float:
            raise ValueError(f"ggml has no to_float for type {ty}")
        src = np.frombuffer(raw, dtype=np.uint8).copy()
        out = np.empty(n_elements, dtype=np.float32)
        _ToFloat(traits.to_float)(_ptr(src), _ptr(out), n_elements)
        return out


if __name__ == "__main__":
    # Smoke check: quantize gaussian rows with every type and report ggml's RMSE.
    ref = GgmlRef()
    print(ref.path)
    x = (np.random.default_rng(0).standard_normal((8, 512)) * 0.02).astype(np.float32)
    for name in TYPE_IDS:
        raw = ref.quantize(x, name)
        y = ref.dequantize(raw, name, x.size).reshape(x.shape)
        print(f"{name:5s} {len(raw) // 8:5d} bytes/row  rmse {np.sqrt(np.mean((x - y) ** 2)):.3e}")
