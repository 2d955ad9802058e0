#!/usr/bin/python3
"""Golden masks for chapter 6's pruning (chapters/06-sparsity/prune.h).

Needs Debian's python3-torch (PyTorch 1.13), which only /usr/bin/python3 sees. Writes:

  golden/prune_unstructured.safetensors  weights w_a, w_b, w_c with distinct magnitudes and,
      for each sparsity s in SPARSITIES, the mask of torch.nn.utils.prune.l1_unstructured
      ("l1.NAME.S") and of the original project's rule ("orig.NAME.S": threshold =
      kthvalue(|w|, k), keep |w| > threshold); plus w_ties, whose magnitudes repeat (and
      hold zeros, as an already pruned layer does), with the original rule's masks only.
  golden/prune_structured.safetensors    weights w_s, w_r; for n in (2, 1) and dim in (0, 1)
      the masks of prune.ln_structured ("ln{n}.d{dim}.NAME.S") and the norms of the slices
      in float64 ("norm{n}.d{dim}.NAME", torch.norm over every other dimension).
  golden/prune_global.safetensors        g0, g1, g2 (magnitudes distinct across all three)
      and the masks of prune.global_unstructured(L1Unstructured) over the three
      ("global.gI.S").
  golden/prune_schedule.safetensors      the original's iterative schedule (F64 sequences
      "iter.NAME", the configuration in the metadata) written the way the original writes
      it in Python, and Zhu & Gupta's cubic schedule ("cubic", t = 0 .. 29).

Counts: every call passes torch an integer amount, k = int(n * s) (our count; torch would
round a float amount, round(n * s)), so both prune the same number. Masks are stored as
U8. Distinct magnitudes (and slice norms at least 1e-3 apart, relatively) make the masks
independent of tie-breaking; the script asserts it. Deterministic (fixed seeds).

    /usr/bin/python3 reference/make_golden_prune.py          # rewrite the four files
    /usr/bin/python3 reference/make_golden_prune.py --check  # rebuild in memory, compare bytes
"""
import argparse
import os
import sys

import torch
import torch.nn.utils.prune as prune

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_golden_dtypes import GOLDEN, safetensors_bytes  # noqa: E402

SPARSITIES = (0.3, 0.5, 0.7)


def distinct_weights(gen, shape, lo=0.05, hi=1.0):
    """A float32 tensor of shape whose magnitudes are all different (a random permutation
    of evenly spaced values in [lo, hi]) with random signs."""
    n = 1
    for d in shape:
        n *= d
    mags = lo + (hi - lo) * (torch.randperm(n, generator=gen).double() + 1) / n
    signs = torch.randint(0, 2, (n,), generator=gen).double() * 2 - 1
    w = (mags * signs).float().reshape(shape)
    assert torch.unique(w.abs()).numel() == n
    return w


def count(n, s):
    """The number pruned: int(n * s), as the original computes it."""
    return int(n * s)


def mask_of(fn, w, *args, **kw):
    """The mask torch.nn.utils.prune's fn leaves on a Conv2d-like holder of w, as uint8."""
    holder = torch.nn.Module()
    holder.weight = torch.nn.Parameter(w.clone())
    fn(holder, "weight", *args, **kw)
    return holder.weight_mask.to(torch.uint8)


def original_rule(w, s):
    """The original project's pruner: the k-th smallest magnitude is the threshold and
    only magnitudes above it stay. Raises at k = 0 (kthvalue's k counts from 1)."""
    k = count(w.numel(), s)
    threshold = torch.kthvalue(w.abs().flatten(), k).values
    return (w.abs() > threshold).to(torch.uint8)


def unstructured_file():
    gen = torch.Generator().manual_seed(601)
    ws = {"w_a": distinct_weights(gen, (6, 4, 3, 3)), "w_b": distinct_weights(gen, (8, 3, 2, 2)),
          "w_c": distinct_weights(gen, (5, 7))}
    out = dict(ws)
    for name, w in ws.items():
        for s in SPARSITIES:
            k = count(w.numel(), s)
            m = mask_of(prune.l1_unstructured, w, amount=k)
            assert int((m == 0).sum()) == k
            o = original_rule(w, s)
            assert torch.equal(m, o)  # distinct magnitudes: the two rules agree
            out[f"l1.{name}.{s}"] = m
            out[f"orig.{name}.{s}"] = o
    # ties: magnitudes from a few levels, zeros among them
    levels = torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0])
    idx = torch.randint(0, 5, (4, 3, 2, 2), generator=gen)
    signs = torch.randint(0, 2, idx.shape, generator=gen).float() * 2 - 1
    wt = levels[idx] * signs
    out["w_ties"] = wt
    for s in SPARSITIES:
        out[f"orig.w_ties.{s}"] = original_rule(wt, s)
    try:
        original_rule(wt, 0.0)
        raise AssertionError("kthvalue(., 0) was expected to raise")
    except RuntimeError:
        pass
    return out, {"sparsities": ",".join(str(s) for s in SPARSITIES)}


def structured_file():
    seed = 602
    while True:  # norms of slices well apart, so that float32 sums cannot reorder them
        gen = torch.Generator().manual_seed(seed)
        ws = {"w_s": distinct_weights(gen, (10, 6, 3, 3)), "w_r": distinct_weights(gen, (7, 9, 1, 2))}
        ok = True
        for w in ws.values():
            for p in (2, 1):
                for dim in (0, 1):
                    dims = [d for d in range(w.dim()) if d != dim]
                    v = torch.sort(torch.norm(w.double(), p=p, dim=dims)).values
                    ok = ok and bool(((v[1:] - v[:-1]) / v[1:] > 1e-3).all())
        if ok:
            break
        seed += 1
    out = dict(ws)
    for name, w in ws.items():
        for p in (2, 1):
            for dim in (0, 1):
                dims = [d for d in range(w.dim()) if d != dim]
                out[f"norm{p}.d{dim}.{name}"] = torch.norm(w.double(), p=p, dim=dims)
                for s in SPARSITIES:
                    k = count(w.shape[dim], s)
                    m = mask_of(prune.ln_structured, w, amount=k, n=p, dim=dim)
                    slices = m.sum(dim=dims) == 0
                    assert int(slices.sum()) == k
                    out[f"ln{p}.d{dim}.{name}.{s}"] = m
    return out, {"sparsities": ",".join(str(s) for s in SPARSITIES), "seed": str(seed)}


def global_file():
    gen = torch.Generator().manual_seed(603)
    shapes = [(6, 4, 3, 3), (8, 6, 1, 1), (4, 8, 3, 3)]
    sizes = [torch.Size(s).numel() for s in shapes]
    flat = distinct_weights(gen, (sum(sizes),))
    ws, off = {}, 0
    for i, (shape, n) in enumerate(zip(shapes, sizes)):
        ws[f"g{i}"] = flat[off:off + n].reshape(shape).clone()
        off += n
    out = dict(ws)
    for s in SPARSITIES:
        holders = []
        for i in range(3):
            h = torch.nn.Module()
            h.weight = torch.nn.Parameter(ws[f"g{i}"].clone())
            holders.append(h)
        k = count(sum(sizes), s)
        prune.global_unstructured([(h, "weight") for h in holders],
                                  pruning_method=prune.L1Unstructured, amount=k)
        zeros = 0
        for i, h in enumerate(holders):
            m = h.weight_mask.to(torch.uint8)
            zeros += int((m == 0).sum())
            out[f"global.g{i}.{s}"] = m
        assert zeros == k
    return out, {"sparsities": ",".join(str(s) for s in SPARSITIES)}


ITERATIVE = {  # name: (initial, final, iterations, epochs_per_iteration)
    "default": (0.0, 0.9, 14, 3),
    "b": (0.1, 0.7, 10, 3),      # (10 + 1) / 3 - 1 = 2.667: true division; // would give 2
    "c": (0.2, 0.5, 20, 2),
    "d": (0.0, 0.7, 9, 1),
}


def iterative_sequence(initial, final, iterations, epochs_per_iteration):
    """The original's schedule, as its Python computes it: one sparsity per round."""
    step = (final - initial) / ((iterations + 1) / epochs_per_iteration - 1)
    return [min(initial + step * i, final) for i in range(iterations)]


CUBIC = (0.05, 0.8, 2, 5, 3)  # initial, final, t0, n, dt


def cubic_sequence(si, sf, t0, n, dt, ts):
    """Zhu & Gupta (2017): s_t = sf + (si - sf) (1 - (t - t0) / (n dt))^3 at t0, t0 + dt, ...,
    held between pruning steps."""
    seq = []
    for t in ts:
        if t < t0:
            seq.append(si)
            continue
        tj = t0 + min((t - t0) // dt, n) * dt
        seq.append(sf + (si - sf) * (1 - (tj - t0) / (n * dt)) ** 3)
    return seq


def schedule_file():
    out, meta = {}, {}
    for name, cfg in ITERATIVE.items():
        out[f"iter.{name}"] = torch.tensor(iterative_sequence(*cfg), dtype=torch.float64)
        meta[f"iter.{name}"] = ",".join(str(v) for v in cfg)
    si, sf, t0, n, dt = CUBIC
    out["cubic"] = torch.tensor(cubic_sequence(si, sf, t0, n, dt, range(30)), dtype=torch.float64)
    meta["cubic"] = ",".join(str(v) for v in CUBIC)
    return out, meta


FILES = {"prune_unstructured": unstructured_file, "prune_structured": structured_file,
         "prune_global": global_file, "prune_schedule": schedule_file}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--check", action="store_true", help="compare with the stored files")
    args = ap.parse_args()
    bad = 0
    for name, make in FILES.items():
        tensors, meta = make()
        meta = {"generator": "reference/make_golden_prune.py", "torch": torch.__version__, **meta}
        data = safetensors_bytes(tensors, meta)
        path = os.path.join(GOLDEN, name + ".safetensors")
        if args.check:
            same = os.path.exists(path) and open(path, "rb").read() == data
            print(f"{name}: {'same' if same else 'DIFFERS'}")
            bad += not same
        else:
            with open(path, "wb") as f:
                f.write(data)
            print(f"{path}: {len(tensors)} tensors, {len(data)} bytes")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
