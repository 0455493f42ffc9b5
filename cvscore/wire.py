"""The wire tables, once: dtypes, runtimes and reductions as cvscore names them.

Shared by the client, the server, the exporters and the KServe front end. It imports
numpy and the generated protobuf module only (never torch), so the client stays light.
A torch dtype map, where one is needed, is derived from :data:`NUMPY_DTYPES` by name.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .v1 import scoring_pb2 as pb

# dtype name -> numpy dtype as laid out on the wire (little-endian)
NUMPY_DTYPES: dict[str, np.dtype[Any]] = {
    "float32": np.dtype("<f4"),
    "float64": np.dtype("<f8"),
    "float16": np.dtype("<f2"),
    "int32": np.dtype("<i4"),
    "int64": np.dtype("<i8"),
    "bool": np.dtype("?"),
    "uint8": np.dtype("u1"),
}
# dtype name <-> cvscore.v1.DataType
DTYPE_TO_PB: dict[str, pb.DataType] = {
    "float32": pb.DATA_TYPE_FLOAT32,
    "float64": pb.DATA_TYPE_FLOAT64,
    "float16": pb.DATA_TYPE_FLOAT16,
    "int32": pb.DATA_TYPE_INT32,
    "int64": pb.DATA_TYPE_INT64,
    "bool": pb.DATA_TYPE_BOOL,
    "uint8": pb.DATA_TYPE_UINT8,
}
PB_TO_DTYPE: dict[int, str] = {v: k for k, v in DTYPE_TO_PB.items()}
# dtype name <-> KServe v2 datatype, and Triton's config.pbtxt data_type
TO_KSERVE: dict[str, str] = {
    "bool": "BOOL",
    "uint8": "UINT8",
    "int32": "INT32",
    "int64": "INT64",
    "float16": "FP16",
    "float32": "FP32",
    "float64": "FP64",
}
KSERVE_DTYPES: dict[str, str] = {v: k for k, v in TO_KSERVE.items()}
TRITON_DTYPES: dict[str, str] = {name: f"TYPE_{code}" for name, code in TO_KSERVE.items()}

# The runtimes an artifact can be served by ("auto": the server's default for a model).
RUNTIMES: tuple[str, ...] = ("torchscript", "onnx", "torch_export")
RUNTIME_TO_PB: dict[str, pb.Runtime] = {
    "auto": pb.RUNTIME_AUTO,
    "torchscript": pb.RUNTIME_TORCHSCRIPT,
    "onnx": pb.RUNTIME_ONNX,
    "torch_export": pb.RUNTIME_TORCH_EXPORT,
}
PB_TO_RUNTIME: dict[int, str] = {v: k for k, v in RUNTIME_TO_PB.items()}

# What a Score call reduces per-sample scores with.
REDUCTIONS: tuple[str, ...] = ("none", "mean", "sum")
REDUCTION_TO_PB: dict[str, pb.Reduction] = {
    "none": pb.REDUCTION_NONE,
    "mean": pb.REDUCTION_MEAN,
    "sum": pb.REDUCTION_SUM,
}
PB_TO_REDUCTION: dict[int, str] = {
    pb.REDUCTION_UNSPECIFIED: "mean",
    **{v: k for k, v in REDUCTION_TO_PB.items()},
}


def dtype_name(dtype: np.dtype[Any]) -> str:
    """The wire name of a numpy dtype (either byte order), or ``str(dtype)`` if it has none."""
    for name, candidate in NUMPY_DTYPES.items():
        if candidate == dtype or candidate.newbyteorder("=") == dtype:
            return name
    return str(dtype)
