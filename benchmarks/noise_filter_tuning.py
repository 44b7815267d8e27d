"""Tuning aid for the default noise filter's margin mode (tuning seeds only, never reported ones).

    python benchmarks/noise_filter_tuning.py dump --seeds 100 101 --out /tmp/nf   # plain runs, per-epoch stats
    python benchmarks/noise_filter_tuning.py proxy --dir /tmp/nf --seeds 100 101 --json out.json

``dump``: one plain training run per (setting, seed) (``--samples 5000``, 30 epochs, the
benchmark's recipe) with a ledger; after each epoch the per-sample loss and margin of that
epoch are saved (from the differences of the ledger's running sums) with the noise mask.

``proxy``: an open-loop estimate of :func:`loss_margin`'s detection F1 without retraining: at
every epoch t from the warm-up on, the rule is applied to the statistics of epochs 1..t (the
loss mixture on the normalized mean loss as the filter fits it; loss mode when Ashman's D >= 2,
else AUM < -threshold), and a sample counts as flagged if it was flagged at any such epoch
(flags of the filter stick: a flagged sample is no longer trained, so its statistics freeze).
It ignores that removing flagged samples changes the model: against the closed-loop runs on
the tuning seeds it was within 0.03 at sym40, sym60, pair30 and inst40 but 0.08-0.13 too low
at sym20 and 0.03-0.07 too high at pair40 (see ``docs/benchmarks.md``), so it only ranks
candidates; closed-loop runs decide. Prints the F1 per (warm-up, threshold) and setting,
means over seeds.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

if __name__ == "__main__":  # run as a script: make the repository importable (an import keeps sys.path)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np
import torch
from common import make_split, markdown_table, single_thread, train
from noisy_labels import NOISY_SETTINGS, SETTINGS


def dump(setting: str, seed: int, out: Path, samples: int, epochs: int) -> None:
    """Plain training with a ledger; save per-epoch per-sample loss and margin."""
    kind, rate = SETTINGS[setting]
    split = make_split(samples, rate, kind, seed=seed)
    per_epoch: dict[str, list[np.ndarray]] = {"loss": [], "margin": []}
    previous: dict[str, torch.Tensor] = {}

    def record(epoch, ledger, decision) -> None:
        stats = ledger.stats()
        count = stats.count.double()
        sums = {"loss": stats.mean_loss.double() * count, "margin": stats.aum.double() * count}
        for key, value in sums.items():
            per_epoch[key].append((value - previous.get(key, 0)).float().numpy())
        previous.update(sums)

    train(split.x, split.y, epochs=epochs, seed=seed, track=True, on_epoch_end=record)
    np.savez_compressed(out / f"{setting}_{seed}.npz", mask=split.noise_mask.numpy(),
                        **{k: np.stack(v) for k, v in per_epoch.items()})
    print(f"dumped {setting} seed {seed}", flush=True)


def _f1(flagged: np.ndarray, mask: np.ndarray) -> float:
    return float(2 * (flagged & mask).sum() / max(flagged.sum() + mask.sum(), 1))


def proxy(data: dict[str, np.ndarray], warmups: list[int], thresholds: list[float], tau: float = 0.1,
          min_separation: float = 2.0) -> dict[tuple[int, float], float]:
    """Open-loop F1 of the loss/negative-margin rule per (warm-up, threshold)."""
    from curated_loader.curation import Ledger
    from curated_loader.curation.policies.noise import _fit_loss_gmm, separation

    mask, loss, margin = data["mask"], data["loss"], data["margin"]
    epochs = loss.shape[0]
    steps = []
    for t in range(min(warmups), epochs + 1):
        ledger = Ledger(len(mask), num_classes=10)  # a ledger holding the means of epochs 1..t
        ledger.set_epoch(0)
        ids = torch.arange(len(mask))
        ledger.record(ids, torch.from_numpy(loss[:t].mean(0)))
        stats = ledger.stats()
        x, model = _fit_loss_gmm(stats, stats.seen, True, loss_key="mean_loss", bins=1024, max_iter=100,
                                 tol=1e-6, reg_covar=5e-4)
        steps.append((t, separation(model) >= min_separation, (model.posterior_low(x) <= tau).numpy(),
                      margin[:t].mean(0)))
    out = {}
    for warmup in warmups:
        for threshold in thresholds:
            flagged = np.zeros_like(mask)
            for t, bimodal, loss_flags, aum in steps:
                if t >= warmup:
                    flagged |= loss_flags if bimodal else aum < -threshold
            out[(warmup, threshold)] = _f1(flagged, mask)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", choices=("dump", "proxy"))
    parser.add_argument("--settings", nargs="+", default=list(NOISY_SETTINGS), choices=NOISY_SETTINGS)
    parser.add_argument("--seeds", nargs="+", type=int, default=[100, 101])
    parser.add_argument("--samples", type=int, default=5000)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--out", "--dir", dest="dir", default="/tmp/noise_filter_tuning")
    parser.add_argument("--warmups", nargs="+", type=int, default=[10, 12, 15, 18, 20])
    parser.add_argument("--thresholds", nargs="+", type=float, default=[0.0, 0.1, 0.2, 0.25, 0.3, 0.4, 0.5])
    parser.add_argument("--json", default="")
    args = parser.parse_args(argv)
    single_thread()
    folder = Path(args.dir)
    if args.mode == "dump":
        folder.mkdir(parents=True, exist_ok=True)
        for setting in args.settings:
            for seed in args.seeds:
                dump(setting, seed, folder, args.samples, args.epochs)
        return
    scores: dict[str, dict[tuple[int, float], list[float]]] = {}
    for setting in args.settings:
        for seed in args.seeds:
            path = folder / f"{setting}_{seed}.npz"
            if not path.exists():
                raise FileNotFoundError(f"{path}: run the dump mode first for {setting} seed {seed}")
            for key, f1 in proxy(dict(np.load(path)), args.warmups, args.thresholds).items():
                scores.setdefault(setting, {}).setdefault(key, []).append(f1)
    keys = [(w, th) for w in args.warmups for th in args.thresholds]
    rows = []
    for key in keys:
        means = [float(np.mean(scores[s][key])) for s in args.settings]
        rows.append([f"{key[0]}", f"{key[1]:g}", *(f"{m:.3f}" for m in means), f"{np.mean(means):.3f}"])
    print(markdown_table(["warm-up", "threshold", *args.settings, "mean F1"], rows))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({
            "seeds": args.seeds, "settings": args.settings,
            "proxy_f1": [{"warmup": w, "threshold": th, **{s: scores[s][(w, th)] for s in args.settings}}
                         for w, th in keys]}, indent=1))


if __name__ == "__main__":
    main()
