#!/usr/bin/python3
# Golden data for chapter 1's padding rule (cr_pad_index). Needs Debian's python3-torch,
# which only /usr/bin/python3 sees. Writes reference/golden/pad_index.safetensors: for each
# padding mode and input length n, the tensor "MODE_nN_lL_rR" holds F.pad(arange(n), (L, R),
# MODE): entry j is the input index PyTorch copies into padded position j (-1 for zeros'
# padding, which we encode by padding arange(n) + 1 with zeros and subtracting 1).
import json
import os
import struct

import torch
import torch.nn.functional as F


def write_safetensors(path, tensors, metadata):
    """Writes float32 tensors in the safetensors layout (stdlib only)."""
    header, blobs, offset = {}, [], 0
    for name, t in tensors.items():
        data = t.contiguous().to(torch.float32).numpy().tobytes()
        header[name] = {"dtype": "F32", "shape": list(t.shape),
                        "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    header["__metadata__"] = metadata
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for b in blobs:
            f.write(b)
    os.replace(tmp, path)


def main():
    tensors = {}
    for mode in ("zeros", "reflect", "replicate", "circular"):
        for n in (1, 2, 3, 4, 7):
            for left, right in ((1, 1), (2, 3), (3, 0), (n - 1, n), (n, n)):
                if left < 0 or right < 0:
                    continue
                if mode == "reflect" and max(left, right) >= n:
                    continue  # PyTorch: reflect padding must be smaller than the input
                if mode == "circular" and max(left, right) > n:
                    continue  # PyTorch: circular padding wraps at most once
                x = torch.arange(n, dtype=torch.float64).reshape(1, 1, n) + 1
                if mode == "zeros":
                    y = F.pad(x, (left, right), mode="constant", value=0.0)
                else:
                    y = F.pad(x, (left, right), mode=mode)
                tensors[f"{mode}_n{n}_l{left}_r{right}"] = (y - 1).reshape(-1)
    here = os.path.dirname(os.path.abspath(__file__))
    write_safetensors(os.path.join(here, "golden", "pad_index.safetensors"), tensors,
                      {"torch_version": torch.__version__,
                       "description": "source index of each padded position, per padding mode"})
    print(f"wrote {len(tensors)} padding sequences")


if __name__ == "__main__":
    main()
