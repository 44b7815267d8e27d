"""Per-step cost of curation tracking: reducer + callback vs a plain cross-entropy step.

    python benchmarks/tracking_overhead.py            # MNIST-1D, 16k train samples
    python benchmarks/tracking_overhead.py --quick    # tiny, for the test suite
    python benchmarks/tracking_overhead.py --device cuda

Same model, data and batch size; the two variants alternate epoch by epoch in one process.
Step time = on_train_batch_start → on_train_batch_end (forward, loss, backward, optimizer),
median over all steps. The epoch-end re-curation (ledger sync + plan) is timed separately.
With ``--device cuda`` the recording runs under ``torch.cuda.set_sync_debug_mode("error")``,
so any host synchronisation inside the tracked step fails the run.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import lightning as L
import torch
import torch.nn.functional as F

from curated_loader import CuratedDataModule, CurationCallback, curated_loss
from curated_loader.curation import CurationPlan, GMMFilter
from curated_loader.datasets import write_noisy_mnist1d
from curated_loader.models import Signal1DCNN


class Plain(L.LightningModule):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.net = Signal1DCNN(channels=width)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return F.cross_entropy(self.net(x), y)

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=1e-3)


class Tracked(Plain):
    def training_step(self, batch, batch_idx):
        x, y = batch
        logits = self.net(x)
        return curated_loss(self, F.cross_entropy(logits, y, reduction="none"), logits, y)


class StepTimer(L.Callback):
    def __init__(self, sync_debug: bool) -> None:
        self.times: list[float] = []
        self.sync_debug = sync_debug

    def _sync(self, pl_module) -> None:
        if pl_module.device.type == "cuda":
            torch.cuda.synchronize()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self._sync(pl_module)
        if self.sync_debug:
            torch.cuda.set_sync_debug_mode("error")
        self.start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if self.sync_debug:
            torch.cuda.set_sync_debug_mode(0)
        self._sync(pl_module)
        self.times.append(time.perf_counter() - self.start)


class EpochEndTimer(CurationCallback):
    """The curation callback, timing its epoch-end work."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.epoch_end: list[float] = []

    def on_train_epoch_end(self, trainer, pl_module):
        start = time.perf_counter()
        super().on_train_epoch_end(trainer, pl_module)
        self.epoch_end.append(time.perf_counter() - start)


def run_epoch(model, dm, callbacks, accelerator) -> None:
    trainer = L.Trainer(max_epochs=1, accelerator=accelerator, devices=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=callbacks)
    trainer.fit(model, dm)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=20000)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--width", type=int, default=25, help="conv channels of the 1-D CNN")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per variant (alternating)")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.samples, args.epochs = 1000, 1
    torch.set_num_threads(1)
    accelerator = "gpu" if args.device == "cuda" else "cpu"
    with tempfile.TemporaryDirectory() as tmp:
        paths = write_noisy_mnist1d(tmp, num_samples=args.samples, noise_rate=0.4, progress=False)
        dm_kw = dict(fields=("npy", "cls"), decode=(), batch_size=args.batch)
        plain, tracked = Plain(args.width), Tracked(args.width)
        tracked.load_state_dict(plain.state_dict())
        plain_timer, tracked_timer = StepTimer(False), StepTimer(args.device == "cuda")
        curation = EpochEndTimer(CurationPlan(noise_filter=GMMFilter(warmup_epochs=0)), num_classes=10)
        for _ in range(args.epochs):
            run_epoch(plain, CuratedDataModule(paths.train_index, **dm_kw), [plain_timer], accelerator)
            run_epoch(tracked, CuratedDataModule(paths.train_index, **dm_kw), [curation, tracked_timer], accelerator)
    skip = 5 if len(plain_timer.times) > 20 else 0  # first steps include warm-up
    p = statistics.median(plain_timer.times[skip:])
    t = statistics.median(tracked_timer.times[skip:])
    name = torch.cuda.get_device_name() if args.device == "cuda" else "CPU (1 thread)"
    print(f"device: {name}; {args.samples} MNIST-1D samples, batch {args.batch}, CNN width {args.width}\n")
    print("| variant | median step ms | steps |")
    print("|---|---:|---:|")
    print(f"| plain F.cross_entropy | {p * 1e3:.3f} | {len(plain_timer.times)} |")
    print(f"| curated_loss + CurationCallback | {t * 1e3:.3f} | {len(tracked_timer.times)} |")
    print(f"\nstep-time ratio tracked / plain: {t / p:.3f}")
    print(f"epoch-end re-curation (sync + plan + publish), median: {statistics.median(curation.epoch_end) * 1e3:.1f} ms")


if __name__ == "__main__":
    main()
