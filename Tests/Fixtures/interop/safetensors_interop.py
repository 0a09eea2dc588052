"""Interoperability with the Python safetensors package (numpy only, no PyTorch).

write <path>        writes a file with one tensor of each dtype preftune reads, and metadata
check-model <path>  loads a preftune model file and prints a JSON summary of it
"""
import json
import sys

import numpy as np
from safetensors import safe_open
from safetensors.numpy import save_file


def write(path):
    tensors = {
        "f32": np.arange(6, dtype=np.float32).reshape(2, 3) / 4,
        "f64": np.array([1.5, -2.25, 1e-300], dtype=np.float64),
        "i64": np.array([[-(2**40), 7]], dtype=np.int64),
        "i32": np.array([-5, 0, 2**31 - 1], dtype=np.int32),
        "u8": np.array([0, 255, 17], dtype=np.uint8),
        "flags": np.array([True, False, True]),
        "empty": np.zeros((0, 4), dtype=np.float32),
    }
    save_file(tensors, path, metadata={"note": "written by python", "config": json.dumps({"a": [1, 2]})})


def check_model(path):
    with safe_open(path, "np") as f:
        metadata = f.metadata()
        summary = {
            "metadata_config": json.loads(metadata["config"]),
            "tensors": {k: {"shape": list(f.get_tensor(k).shape), "dtype": str(f.get_tensor(k).dtype),
                            "sum": float(f.get_tensor(k).astype(np.float64).sum())} for k in f.keys()},
        }
    print(json.dumps(summary))


if __name__ == "__main__":
    {"write": write, "check-model": check_model}[sys.argv[1]](sys.argv[2])
