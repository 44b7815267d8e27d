"""Counter-based per-sample randomness.

Every random number an augmentation draws is a pure function of
``(seed, epoch, id, repeat)`` (folded into one int64 *sample seed*), a small
integer *stream* naming the parameter, and the element index inside the draw.
Nothing depends on worker count, batch composition or call order, so

* a resumed or re-run epoch augments every sample identically,
* loader workers never share (or need) a random generator,
* the per-sample path (1-element seed tensor, in a worker) and the batched path
  (B seeds, on the training device) draw *identical* parameters for the same
  sample, because both call the same :func:`uniform` / :func:`normal`.

The hash is a 32-bit avalanche mixer (xor-shift / multiply rounds) evaluated
with int64 torch ops. Values are kept in ``[0, 2**32)`` and every product is
split into 16-bit halves, so no intermediate ever exceeds 2**49: no signed
overflow on any device, bit-identical results on CPU and CUDA. For a single
sample on the CPU the same code runs on Python ints (much cheaper than a chain
of one-element tensor ops) and gives the same bits.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence

import torch

__all__ = ["sample_seed", "fold_in", "uniform", "normal", "seed_of_sample"]

_M32 = 0xFFFFFFFF
_GOLDEN = 0x9E3779B9
_MUL_A = 0x7FEB352D
_MUL_B = 0x846CA68B
# distinct initial values for the independent hash lanes
_IV_HI, _IV_LO, _IV_KEY_A, _IV_KEY_B, _IV_FOLD = (
    0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344, 0xA4093822,
)

IntLike = int | torch.Tensor
Word = int | torch.Tensor  # the mixing code runs unchanged on Python ints and int64 tensors


def _mul32(x: Word, c: int) -> Word:
    """``(x * c) mod 2**32`` for ``x`` in ``[0, 2**32)`` without int64 overflow."""
    lo, hi = c & 0xFFFF, c >> 16
    return (x * lo + (((x * hi) & 0xFFFF) << 16)) & _M32


def _mix32(x: Word) -> Word:
    """Bijective 32-bit avalanche mix of values in ``[0, 2**32)``."""
    x = x ^ (x >> 16)
    x = _mul32(x, _MUL_A)
    x = x ^ (x >> 15)
    x = _mul32(x, _MUL_B)
    return x ^ (x >> 16)


def _absorb(h: Word, word: Word) -> Word:
    """Fold one 32-bit word into a 32-bit hash state."""
    return _mix32(((h + _GOLDEN) & _M32) ^ word)


def _hash(iv: int, values: Sequence[Word]) -> Word:
    """Hash 64-bit values (two's complement words, low then high) into 32 bits."""
    h: Word = iv
    for v in values:
        h = _absorb(_absorb(h, v & _M32), (v >> 32) & _M32)
    return h


def _join(hi: Word, lo: Word) -> Word:
    """Two 32-bit lanes → one non-negative int64 (63 bits)."""
    return ((hi & 0x7FFFFFFF) << 32) | lo


def _scalar(v: IntLike) -> int | None:
    """``v`` as a Python int when it is one value on the CPU (the per-sample case), else None.

    Python ints run the same arithmetic without tensor overhead; the results are identical
    because every intermediate stays below 2**63.
    """
    if isinstance(v, torch.Tensor):
        return int(v.reshape(())) if v.numel() == 1 and v.device.type == "cpu" else None
    return int(v) if isinstance(v, numbers.Integral) else None


def _tensor_args(*vals: IntLike) -> list[torch.Tensor]:
    return [v for v in vals if isinstance(v, torch.Tensor)]


def _as_long(v: IntLike, device: torch.device | None) -> torch.Tensor:
    return torch.as_tensor(v, dtype=torch.int64, device=device)


def _combine(iv_pair: tuple[int, int], vals: Sequence[IntLike]) -> torch.Tensor:
    """63-bit hash of broadcast int64 inputs; Python-int fast path for single values."""
    vals = [v if isinstance(v, (torch.Tensor, numbers.Integral)) else _as_long(v, None) for v in vals]
    tensors = _tensor_args(*vals)
    shape = torch.broadcast_shapes(*(t.shape for t in tensors)) if tensors else torch.Size()
    device = tensors[0].device if tensors else None
    scalars = [_scalar(v) for v in vals]
    if all(s is not None for s in scalars) and shape.numel() == 1:
        words = [int(s) for s in scalars]  # type: ignore[arg-type]
        value = _join(_hash(iv_pair[0], words), _hash(iv_pair[1], words))
        return torch.full(shape, value, dtype=torch.int64, device=device)
    args = torch.broadcast_tensors(*(_as_long(v, device) for v in vals))
    out = _join(_hash(iv_pair[0], args), _hash(iv_pair[1], args))
    assert isinstance(out, torch.Tensor)
    return out


def sample_seed(seed: IntLike, epoch: IntLike, ids: IntLike, repeat: IntLike = 0) -> torch.Tensor:
    """Per-sample seeds (non-negative int64) from run seed, epoch, sample id and repeat index.

    All arguments broadcast; the result lives on the device of the first tensor argument
    (in the order ids, repeat, epoch, seed).
    """
    ordered = (ids, repeat, epoch, seed)
    device = next((v.device for v in ordered if isinstance(v, torch.Tensor)), None)
    vals = [v.to(device) if isinstance(v, torch.Tensor) else v for v in (seed, epoch, ids, repeat)]
    return _combine((_IV_HI, _IV_LO), vals)


def fold_in(seeds: torch.Tensor, key: int) -> torch.Tensor:
    """Derive independent child seeds (e.g. one per member of a composition)."""
    return _combine((_IV_FOLD, _IV_FOLD ^ _M32), [seeds, int(key)])


def seed_of_sample(sample: dict) -> torch.Tensor:
    """1-element seed tensor for a loader sample dict (reads ``__seed__``, ``__epoch__``,
    ``__id__`` and ``__repeat__``)."""
    return sample_seed(
        int(sample["__seed__"]),
        int(sample["__epoch__"]),
        torch.tensor([int(sample["__id__"])], dtype=torch.int64),
        int(sample.get("__repeat__", 0)),
    )


def _bits(seeds: torch.Tensor, stream: int, shape: Sequence[int]) -> torch.Tensor:
    """32-bit random words, shape ``[B, *shape]``, elementwise in (seed, stream, index)."""
    seeds = seeds.reshape(-1).to(torch.int64)
    n = 1
    for d in shape:
        n *= int(d)
    one = _scalar(seeds) if seeds.numel() == 1 else None
    key_src: Sequence[Word] = [one, int(stream)] if one is not None else [seeds, _as_long(stream, seeds.device)]
    key_a, key_b = _hash(_IV_KEY_A, key_src), _hash(_IV_KEY_B, key_src)
    if isinstance(key_a, int) and n == 1:
        value = _mix32((_mix32(key_a) + key_b) & _M32)  # element index 0
        return torch.full((1, *shape), value, dtype=torch.int64)
    if isinstance(key_a, torch.Tensor):
        key_a, key_b = key_a.unsqueeze(1), key_b.unsqueeze(1)  # type: ignore[union-attr]
    j = torch.arange(n, dtype=torch.int64, device=seeds.device).unsqueeze(0)
    out = _mix32((_mix32(key_a ^ j) + key_b) & _M32)
    return out.reshape(seeds.shape[0], *shape)


def uniform(seeds: torch.Tensor, stream: int, shape: Sequence[int] = ()) -> torch.Tensor:
    """Float32 uniforms in ``[0, 1)`` of shape ``[B, *shape]`` (24-bit resolution)."""
    return (_bits(seeds, stream, tuple(shape)) >> 8).to(torch.float32) * (1.0 / (1 << 24))


def normal(seeds: torch.Tensor, stream: int, shape: Sequence[int] = ()) -> torch.Tensor:
    """Float32 standard normals of shape ``[B, *shape]`` (Box-Muller over :func:`uniform`)."""
    u = uniform(seeds, stream, (2, *tuple(shape)))
    radius = torch.sqrt(-2.0 * torch.log1p(-u[:, 0]))  # log(1 - u), 1 - u in (0, 1]
    return radius * torch.cos((2.0 * torch.pi) * u[:, 1])
