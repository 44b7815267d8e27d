"""``curated_loss`` reduces with the plan's reduction, or the one it is given, in a real Trainer."""

import lightning as L
import pytest
import torch
import torch.nn.functional as F

from curated_loader import CuratedDataModule, CurationCallback, curated_loss
from curated_loader.curation import CurationPlan
from curated_loader.models import Signal1DCNN

pytestmark = pytest.mark.timeout(300)


class Probe(L.LightningModule):
    """Checks each step's reduced loss against the formula of the expected reduction."""

    def __init__(self, expected: str, given: str | None = None) -> None:
        super().__init__()
        self.net = Signal1DCNN()
        self.expected, self.given, self.checked = expected, given, []

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = F.cross_entropy(self.net(x), y, reduction="none")
        reduced = curated_loss(self, loss, reduction=self.given)
        w = self.trainer.datamodule.batch.weights.to(loss.dtype)
        formula = (w * loss).sum() / (w.sum() if self.expected == "normalized" else len(loss))
        self.checked.append(torch.allclose(reduced, formula))
        return reduced

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=1e-2)


@pytest.mark.parametrize(("plan_reduction", "given", "expected"), [
    ("normalized", None, "normalized"), ("mean", None, "mean"), ("normalized", "mean", "mean"), ("mean", "normalized", "normalized"),
])
def test_curated_loss_follows_the_plan_unless_told(noisy_mnist1d, plan_reduction, given, expected):
    dm = CuratedDataModule(noisy_mnist1d.train_index, fields=("npy", "cls"), decode=(), batch_size=256)
    dm.setup("fit")
    n = dm.train_stream.num_samples
    dm.snapshot.publish(torch.ones(n, dtype=torch.bool), torch.linspace(0.5, 3.0, n), version=0)
    module = Probe(expected, given)
    trainer = L.Trainer(max_epochs=1, limit_train_batches=3, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False,
                        callbacks=[CurationCallback(CurationPlan(reduction=plan_reduction))])
    trainer.fit(module, dm)
    assert len(module.checked) == 3 and all(module.checked)


def test_unknown_reduction_fails_naming_it(noisy_mnist1d):
    dm = CuratedDataModule(noisy_mnist1d.train_index, fields=("npy", "cls"), decode=(), batch_size=256)
    trainer = L.Trainer(max_epochs=1, limit_train_batches=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=[CurationCallback()])
    with pytest.raises(ValueError, match="'sum'"):
        trainer.fit(Probe("normalized", "sum"), dm)
