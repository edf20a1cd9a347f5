"""Capture what real training libraries print, for the metric-convention tests.

Run once in an environment that has them (they are not labls's dependencies):
    python -m venv /tmp/cap && /tmp/cap/bin/pip install torch==2.13.0 transformers lightning tqdm
    /tmp/cap/bin/python tools/capture_library_output.py tests/fixtures/library_output
Each library trains a tiny model on CPU (no download: models built from a config, data made
here) in a child process; its stdout and stderr together, as a labls run's log holds them, are
written to `<out>/<name>.txt`, and the versions to `<out>/VERSIONS.txt`.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

HF_TRAINER = """
import numpy as np, torch
from transformers import BertConfig, BertForSequenceClassification, Trainer, TrainingArguments
torch.manual_seed(0)
config = BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                    intermediate_size=32, num_labels=2)
model = BertForSequenceClassification(config)
class Data(torch.utils.data.Dataset):
    def __init__(self, n):
        g = torch.Generator().manual_seed(n)
        self.x = torch.randint(0, 50, (n, 8), generator=g)
        self.y = (self.x[:, 0] > 25).long()
    def __len__(self):
        return len(self.y)
    def __getitem__(self, i):
        return {"input_ids": self.x[i], "labels": self.y[i]}
def accuracy(pred):
    return {"accuracy": float((pred.predictions.argmax(-1) == pred.label_ids).mean())}
args = TrainingArguments(output_dir="out", num_train_epochs=2, per_device_train_batch_size=8,
                         logging_steps=2, eval_strategy="epoch", report_to=[], use_cpu=True,
                         save_strategy="no", seed=0)
trainer = Trainer(model=model, args=args, train_dataset=Data(32), eval_dataset=Data(16),
                  compute_metrics=accuracy)
result = trainer.train()
trainer.log_metrics("train", result.metrics)
metrics = trainer.evaluate()
trainer.log_metrics("eval", metrics)
"""

LIGHTNING = """
import torch, lightning as L
torch.manual_seed(0)
class Net(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(4, 2)
    def step(self, batch):
        x, y = batch
        logits = self.layer(x)
        return torch.nn.functional.cross_entropy(logits, y), (logits.argmax(-1) == y).float().mean()
    def training_step(self, batch, i):
        loss, acc = self.step(batch)
        self.log("train_loss", loss, prog_bar=True)
        return loss
    def validation_step(self, batch, i):
        loss, acc = self.step(batch)
        self.log("val_acc", acc, prog_bar=True)
    def test_step(self, batch, i):
        loss, acc = self.step(batch)
        self.log("test_acc", acc)
        self.log("test_loss", loss)
    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)
x = torch.randn(64, 4)
y = (x[:, 0] > 0).long()
data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=16)
trainer = L.Trainer(max_epochs=2, accelerator="cpu", logger=False, enable_checkpointing=False)
trainer.fit(Net(), data, data)
trainer.test(trainer.lightning_module, data)
"""

TQDM = """
import time
from tqdm import tqdm
bar = tqdm(range(5), leave=False)
for i in bar:
    bar.set_postfix(loss=1.0 / (i + 1), acc=0.2 * i)
print("val_accuracy: 0.91")
with tqdm(total=3, desc="eval") as bar:
    for i in range(3):
        bar.update(1)
        bar.set_postfix_str(f"val_loss={0.5 - 0.1 * i:.3f}")
"""


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for name, code in (("hf_trainer", HF_TRAINER), ("lightning", LIGHTNING), ("tqdm", TQDM)):
        done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd="/tmp",
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=600)
        (out / f"{name}.txt").write_bytes(done.stdout)
        sys.stderr.write(f"{name}: exit {done.returncode}, {len(done.stdout)} bytes\n")
    versions = subprocess.run(
        [sys.executable, "-c", "import torch, transformers, lightning, tqdm; print("
         "f'torch {torch.__version__}, transformers {transformers.__version__}, "
         "lightning {lightning.__version__}, tqdm {tqdm.__version__}')"],
        capture_output=True, text=True, check=True).stdout
    (out / "VERSIONS.txt").write_text(versions)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
