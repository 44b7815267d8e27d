"""Masked writes and per-class sums over one rank's slice at N = 10^8, one CPU thread.

    python benchmarks/masked_writes.py --size 5e7 --json docs/results/masked_writes.json

For each case, the torch op the plan used before and the one it uses now
(``curated_loader.curation.masking``, ``bincount`` for class masses), on the same inputs (a
mask with no pattern, half true; labels in 0..9), timed alternately: the best of ``--repeats``
each, milliseconds, and the ratio. Every pair is checked to give the same bits (the class
masses to float64 rounding: both add in id order).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

import torch

from curated_loader.curation.masking import fill_, select_, zero_outside_
from results import write_json


def _ms(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return 1e3 * (time.perf_counter() - t0)


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    if a.dtype == torch.float32:
        return torch.equal(a.view(torch.int32), b.view(torch.int32))
    return torch.equal(a, b)


def cases(n: int) -> dict[str, tuple[Callable[[], torch.Tensor], Callable[[], torch.Tensor]]]:
    """Case name -> (before, now), each returning its result."""
    g = torch.Generator().manual_seed(0)
    mask = torch.rand(n, generator=g) < 0.5
    values, source = torch.rand(n, generator=g), torch.rand(n, generator=g)
    codes = torch.randint(0, 7, (n,), dtype=torch.int8, generator=g)
    flags = torch.rand(n, generator=g) < 0.7
    labels = torch.randint(0, 10, (n,), generator=g)
    weights = values.double()
    return {
        "float32 fill": (lambda: values.clone().masked_fill_(mask, 3.0), lambda: fill_(values.clone(), mask, 3.0)),
        "float32 zero outside": (lambda: values.clone().masked_fill_(~mask, 0.0),
                                 lambda: zero_outside_(values.clone(), mask)),
        "float32 select": (lambda: torch.where(mask, source, values), lambda: select_(values.clone(), mask, source)),
        "int8 fill": (lambda: codes.clone().masked_fill_(mask, 6), lambda: fill_(codes.clone(), mask, 6)),
        "bool fill": (lambda: flags.clone().masked_fill_(mask, False), lambda: fill_(flags.clone(), mask, False)),
        "class masses (float64)": (
            lambda: torch.zeros(10, dtype=torch.float64).index_put_((labels,), weights, accumulate=True),
            lambda: torch.bincount(labels, weights=weights, minlength=10),
        ),
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=float, default=5e7, help="ids (one rank's slice at N = 10^8 over 2 ranks)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    n, rows = int(args.size), []
    print(f"{n} ids, 1 thread\n\n| case | before ms | now ms | before / now | same result |\n|---|---:|---:|---:|---|")
    for name, (before, now) in cases(n).items():
        old, new = before(), now()
        same = torch.allclose(old, new, rtol=1e-12, atol=0) if old.dtype == torch.float64 else _same(old, new)
        del old, new
        before_ms = now_ms = float("inf")
        for _ in range(args.repeats):  # alternate, so both meet the same machine
            before_ms, now_ms = min(before_ms, _ms(before)), min(now_ms, _ms(now))
        rows.append({"case": name, "before_ms": before_ms, "now_ms": now_ms, "ratio": before_ms / now_ms, "same": same})
        print(f"| {name} | {before_ms:.1f} | {now_ms:.1f} | {before_ms / now_ms:.1f} | {same} |", flush=True)
    result = {"n": n, "threads": 1, "rows": rows}
    write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
