"""Counter-based per-sample randomness.

Every random number an augmentation draws is a pure function of ``(seed, epoch, id, repeat)``,
the member of a composition, a small integer *stream* naming the parameter, and the element
index inside the draw. Nothing depends on worker count, batch composition or call order, so a
resumed epoch augments every sample identically, loader workers need no generator, and the
per-sample path (a batch of one, in a worker) and the batched path (on the training device)
draw identical bits because both run the same tensor code.

The mixer is SplitMix64's finalizer on int64 tensors (multiplications wrap modulo 2**64;
right shifts are made logical by masking, since int64 shifts are arithmetic). It is checked
bit for bit against the pure-Python :func:`mix64_reference`. Costs per batch:

* batch-wide words (seed, epoch; member, stream, element for each draw column) are hashed
  once on the host into Python ints;
* one 64-bit key per sample: ``mix64(base(seed, epoch) ^ (id + repeat << 40))`` (ids below
  2**40, repeats below 2**23);
* a block of draws: ``mix64(key[:, None] ^ column_words[None, :])``, one ``[B, total]`` tensor
  for every parameter of every member of a :class:`~curated_loader.augment.Compose`.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence

import torch

__all__ = [
    "sample_seed", "sample_base", "element_word", "fold_in", "uniform", "normal", "normal_words", "signed", "seed_of_sample", "mix64", "mix64_reference",
    "Draws", "draw_block",
]

_M64 = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15
_MUL_A = 0xBF58476D1CE4E5B9
_MUL_B = 0x94D049BB133111EB
_REPEAT_SHIFT = 40
# tags keep the host-side hashes of different purposes apart
_TAG_BASE, _TAG_FOLD, _TAG_BLOCK, _TAG_ELEMENT = 0x5EED, 0xF01D, 0xB10C, 0xE1E7

IntLike = int | torch.Tensor


def _signed(v: int) -> int:
    """An unsigned 64-bit value as the int64 with the same bits."""
    v &= _M64
    return v - (1 << 64) if v >> 63 else v


def mix64_reference(x: int) -> int:
    """SplitMix64's output function on Python ints (the reference for :func:`mix64`)."""
    z = (x + _GOLDEN) & _M64
    z = ((z ^ (z >> 30)) * _MUL_A) & _M64
    z = ((z ^ (z >> 27)) * _MUL_B) & _M64
    return z ^ (z >> 31)


def _shr(z: torch.Tensor, k: int, out: torch.Tensor | None = None) -> torch.Tensor:
    """Logical right shift of int64 bits (written into ``out`` when given)."""
    shifted = z >> k if out is None else torch.bitwise_right_shift(z, k, out=out)
    return shifted.bitwise_and_((1 << (64 - k)) - 1)


def mix64(
    x: torch.Tensor, fresh: bool = False, scratch: torch.Tensor | None = None, final_shift: bool = True
) -> torch.Tensor:
    """SplitMix64's output function on int64 tensors: the same bits as
    :func:`mix64_reference` (as two's complement). Works in place on one fresh tensor
    (``fresh``: ``x`` itself, which the caller made for this and hands over). ``scratch``
    (shaped like ``x``) takes the shifted words, so long inputs hashed in blocks allocate
    nothing per block; ``final_shift=False`` skips the last ``z ^= z >>> 31``, which leaves
    bits 33..63 as they are (for callers that keep only top bits)."""
    z = x.add_(_signed(_GOLDEN)) if fresh else x + _signed(_GOLDEN)
    z.bitwise_xor_(_shr(z, 30, scratch)).mul_(_signed(_MUL_A))
    z.bitwise_xor_(_shr(z, 27, scratch)).mul_(_signed(_MUL_B))
    return z.bitwise_xor_(_shr(z, 31, scratch)) if final_shift else z


def _host_hash(*words: int) -> int:
    """Hash Python ints (the batch-wide context) into one signed 64-bit word."""
    h = 0
    for w in words:
        h = mix64_reference(h ^ (int(w) & _M64))
    return _signed(h)


def _host_int(v: IntLike, name: str) -> int:
    if isinstance(v, torch.Tensor):
        if v.numel() != 1 or v.device.type != "cpu":
            raise ValueError(f"{name} must be one value on the host, got a tensor of shape {tuple(v.shape)} on {v.device}")
        return int(v.reshape(()))
    if not isinstance(v, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {type(v).__name__}")
    return int(v)


def sample_base(seed: int, epoch: int) -> int:
    """The host word :func:`sample_seed` mixes every id with: ``key = mix64(base ^ id)`` for
    repeat 0."""
    return _host_hash(_TAG_BASE, seed, epoch)


def element_word(stream: int | tuple[int, ...], index: int = 0) -> int:
    """The host word :func:`uniform` mixes a key with for element ``index`` of ``stream``."""
    return _host_hash(*_element_words(stream, index + 1)[index])


def sample_seed(seed: IntLike, epoch: IntLike, ids: IntLike, repeat: IntLike = 0) -> torch.Tensor:
    """One int64 key per sample from the run seed, the epoch (host integers), the sample ids
    and the repeat index (a host integer or a per-sample tensor like ``ids``)."""
    base = sample_base(_host_int(seed, "seed"), _host_int(epoch, "epoch"))
    ids = torch.as_tensor(ids, dtype=torch.int64)
    if isinstance(repeat, torch.Tensor) and repeat.numel() != 1:
        counter = ids + (repeat.to(ids.device, torch.int64) << _REPEAT_SHIFT)
        return mix64(counter.bitwise_xor_(base), fresh=True)
    offset = _signed(_host_int(repeat, "repeat") << _REPEAT_SHIFT)
    return mix64(ids ^ base if offset == 0 else (ids + offset).bitwise_xor_(base), fresh=True)


def fold_in(seeds: torch.Tensor, key: int) -> torch.Tensor:
    """Derive independent child keys (e.g. for a user callable inside a composition)."""
    return mix64(seeds ^ _host_hash(_TAG_FOLD, key), fresh=True)


def seed_of_sample(sample: dict) -> torch.Tensor:
    """1-element key tensor for a loader sample dict (reads ``__seed__``, ``__epoch__``,
    ``__id__`` and ``__repeat__``)."""
    return sample_seed(
        int(sample["__seed__"]),
        int(sample["__epoch__"]),
        torch.tensor([int(sample["__id__"])], dtype=torch.int64),
        int(sample.get("__repeat__", 0)),
    )


_COLUMN_CACHE: dict[tuple, torch.Tensor] = {}


def _columns(words: tuple[tuple[int, ...], ...], device: torch.device) -> torch.Tensor:
    """int64 ``[len(words)]`` of host-hashed column words, cached per device (made in the graph
    under ``torch.compile``, like :func:`~curated_loader.augment.common.cached_constant`)."""
    if torch.compiler.is_compiling():
        return torch.tensor([_host_hash(*w) for w in words], dtype=torch.int64, device=device)
    key = (words, device)
    cached = _COLUMN_CACHE.get(key)
    if cached is None:
        if len(_COLUMN_CACHE) > 256:
            _COLUMN_CACHE.clear()
        cached = _COLUMN_CACHE[key] = torch.tensor([_host_hash(*w) for w in words], dtype=torch.int64, device=device)
    return cached


def _to_uniform(bits: torch.Tensor) -> torch.Tensor:
    """Float32 uniforms in ``[0, 1)`` from the top 24 bits."""
    return _shr(bits, 40).to(torch.float32).mul_(1.0 / (1 << 24))


def signed(u: torch.Tensor) -> torch.Tensor:
    """Map uniforms in [0, 1) to [-1, 1)."""
    return 2.0 * u - 1.0


def _mixed_columns(keys: torch.Tensor, words: tuple[tuple[int, ...], ...]) -> torch.Tensor:
    """int64 ``[B, len(words)]``: ``mix64(key ^ column word)`` for every key and host-hashed word."""
    return mix64(keys.reshape(-1, 1) ^ _columns(words, keys.device), fresh=True)


def _block_words(members: Sequence[tuple[int, int]]) -> tuple[tuple[int, ...], ...]:
    return tuple((_TAG_BLOCK, m, s) for m, n in members for s in range(n))


def _element_words(stream: int | tuple[int, ...], n: int) -> tuple[tuple[int, ...], ...]:
    stream_words = stream if isinstance(stream, tuple) else (stream,)
    return tuple((_TAG_ELEMENT, *stream_words, j) for j in range(n))


def draw_block(keys: torch.Tensor, members: Sequence[tuple[int, int]]) -> torch.Tensor:
    """Uniforms ``[B, total]`` for ``members`` = (member index, number of draws) pairs, in
    that order; column ``(m, s)`` depends only on the key, ``m`` and ``s``."""
    words = _block_words(members)
    if not words:
        return torch.empty(keys.shape[0], 0, device=keys.device)
    return _to_uniform(_mixed_columns(keys, words))


def _element_bits(seeds: torch.Tensor, stream: int | tuple[int, ...], n: int) -> torch.Tensor:
    """int64 ``[B, n]`` of mixed bits, elementwise in (key, stream, element index)."""
    return _mixed_columns(seeds.to(torch.int64), _element_words(stream, n))


def _numel(shape: Sequence[int]) -> int:
    n = 1
    for d in shape:
        n *= int(d)
    return n


def normal_words(shape: Sequence[int]) -> int:
    """How many 64-bit words :func:`normal` mixes per sample for ``shape`` (two normals each)."""
    return (_numel(shape) + 1) // 2


def uniform(seeds: torch.Tensor, stream: int | tuple[int, ...], shape: Sequence[int] = ()) -> torch.Tensor:
    """Float32 uniforms in ``[0, 1)`` of shape ``[B, *shape]``, elementwise in (key, stream,
    element index)."""
    bits = _element_bits(seeds, stream, _numel(shape))
    return _to_uniform(bits).reshape(bits.shape[0], *shape)


def normal(seeds: torch.Tensor, stream: int | tuple[int, ...], shape: Sequence[int] = ()) -> torch.Tensor:
    """Float32 standard normals of shape ``[B, *shape]``: Box-Muller on two 24-bit uniforms
    from each 64-bit word, giving elements ``2k`` (cosine) and ``2k + 1`` (sine) from word
    ``k``."""
    return _normal_from_bits(_element_bits(seeds, stream, normal_words(shape)), shape)


def _normal_from_bits(bits: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """:func:`normal` from its mixed words ``bits`` ``[B, normal_words(shape)]``."""
    b, n = bits.shape[0], _numel(shape)
    neg_u = _shr(bits, 40).to(torch.float32).mul_(-1.0 / (1 << 24))  # -u, u from bits 40..63 (exact)
    radius = torch.log1p(neg_u).mul_(-2.0).sqrt_()  # log(1 - u), 1 - u in (0, 1]
    angle = (bits >> 16).bitwise_and_((1 << 24) - 1).to(torch.float32).mul_(2.0 * torch.pi / (1 << 24))  # bits 16..39
    cosines, sines = torch.cos(angle).mul_(radius), angle.sin_().mul_(radius)
    if torch.compiler.is_compiling():  # inductor has no complex kernels; it fuses the stack instead
        flat = torch.stack((cosines, sines), -1).reshape(b, -1)
    else:  # (cos, sin) pairs interleaved as one complex tensor's real view: contiguous kernels only
        flat = torch.view_as_real(torch.complex(cosines, sines)).reshape(b, -1)
    flat = flat if flat.shape[1] == n else flat[:, :n]
    return flat if len(shape) == 1 else flat.reshape(b, *shape)


class _Block:
    """A block's 24-bit draws (exact in float32), mapped to [0, 1) and to [-1, 1) when first
    asked for: a member that only reads signed draws costs no uniform mapping, and back."""

    def __init__(self, top: torch.Tensor) -> None:
        self.top = top
        self._uniform: torch.Tensor | None = None
        self._signed: torch.Tensor | None = None

    @property
    def uniform(self) -> torch.Tensor:
        if self._uniform is None:
            self._uniform = self.top * (1.0 / (1 << 24))
        return self._uniform

    @property
    def signed(self) -> torch.Tensor:
        """``signed(uniform)`` bit for bit: ``2 * (v / 2**24)`` is ``v / 2**23`` exactly."""
        if self._signed is None:
            self._signed = self.top.mul(1.0 / (1 << 23)).sub_(1.0)
        return self._signed


class Draws:
    """The random numbers one augmentation gets for a batch: ``u(i)`` is its ``i``-th
    per-sample uniform (a column of the block drawn for the whole composition), ``signed(i)``
    the same mapped to [-1, 1); ``uniform``/``normal`` draw per-element arrays from the sample
    keys, or take them from ``elements`` (stream -> mixed words) when the composition mixed
    them together with the block."""

    def __init__(
        self,
        keys: torch.Tensor,
        block: torch.Tensor | _Block,
        member: int,
        elements: dict[int, torch.Tensor] | None = None,
        signed_block: torch.Tensor | None = None,
        offset: int = 0,
    ) -> None:
        self.keys = keys
        self._block = block
        self.member = member
        self.elements = elements or {}
        self.signed_block = signed_block
        self.offset = offset

    @property
    def block(self) -> torch.Tensor:
        """The uniforms ``[B, total]`` of the whole block this augmentation's columns are in."""
        return self._block.uniform if isinstance(self._block, _Block) else self._block

    @classmethod
    def single(cls, keys: torch.Tensor, count: int, member: int = -1) -> Draws:
        """Draws for one augmentation used on its own."""
        return cls(keys, draw_block(keys, [(member, count)]), member)

    @classmethod
    def for_members(cls, keys: torch.Tensor, members: Sequence[tuple[int, int, dict[int, int]]]) -> list[Draws]:
        """Draws for several augmentations from one mix of every word they need: ``members``
        are (member index, block draws, {stream: words of element draws}) triples. The values
        equal those of :meth:`single` and :func:`uniform`/:func:`normal` bit for bit."""
        block_words = _block_words([(m, n) for m, n, _ in members])
        element_words = tuple(w for m, _, streams in members for st, n in streams.items() for w in _element_words((m, st), n))
        words = block_words + element_words
        if not words:
            empty = torch.empty(keys.shape[0], 0, device=keys.device)
            return [cls(keys, empty, m) for m, _, _ in members]
        bits = _mixed_columns(keys, words)
        block = _Block(_shr(bits[:, : len(block_words)] if element_words else bits, 40).to(torch.float32))
        out, start, at = [], 0, len(block_words)
        for m, n, streams in members:
            elements = {}
            for st, count in streams.items():
                elements[st], at = bits[:, at : at + count], at + count
            out.append(cls(keys, block, m, elements, None, start))
            start += n
        return out

    def u(self, i: int) -> torch.Tensor:
        return self.block[:, self.offset + i]

    def signed(self, i: int) -> torch.Tensor:
        """``signed(u(i))``, from the composition's block mapped once."""
        if isinstance(self._block, _Block):
            return self._block.signed[:, self.offset + i]
        if self.signed_block is None:
            return signed(self.u(i))
        return self.signed_block[:, self.offset + i]

    def uniform(self, stream: int, shape: Sequence[int]) -> torch.Tensor:
        bits = self.elements.get(stream)
        if bits is None or bits.shape[1] != _numel(shape):
            return uniform(self.keys, (self.member, stream), shape)
        return _to_uniform(bits).reshape(bits.shape[0], *shape)

    def normal(self, stream: int, shape: Sequence[int]) -> torch.Tensor:
        bits = self.elements.get(stream)
        if bits is None or bits.shape[1] != normal_words(shape):
            return normal(self.keys, (self.member, stream), shape)
        return _normal_from_bits(bits, shape)
