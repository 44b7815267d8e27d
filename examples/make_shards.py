"""Write MNIST-1D (generated locally) as shards with injected label noise.

    python examples/make_shards.py --out data/mnist1d --noise 0.4 --kind symmetric

The true noise mask goes to ``noise_mask.npy`` beside the shards; only evaluation reads it.
"""

from __future__ import annotations

import argparse

from curated_loader.datasets import write_noisy_mnist1d


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="data/mnist1d")
    parser.add_argument("--samples", type=int, default=20000, help="total samples (80%% train, 20%% clean test)")
    parser.add_argument("--noise", type=float, default=0.4, help="fraction of training labels corrupted")
    parser.add_argument("--kind", choices=("symmetric", "pairflip"), default="symmetric")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--per-shard", type=int, default=1000)
    args = parser.parse_args()
    paths = write_noisy_mnist1d(args.out, num_samples=args.samples, noise_rate=args.noise, noise_kind=args.kind, seed=args.seed, samples_per_shard=args.per_shard)
    print(f"train: {paths.train_index}\ntest:  {paths.test_index}\nnoise mask (evaluation only): {paths.noise_mask}")


if __name__ == "__main__":
    main()
