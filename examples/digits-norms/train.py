"""Which normalisation layer suits a small MLP on handwritten digits?

Trains the same MLP with BatchNorm, LayerNorm and RMSNorm, three seeds each, on scikit-learn's
8x8 digits staged in the dataset cache root (`labls datasets stage digits --root ROOT`). Loads
only from that root, never downloads, and fails loudly when the files are missing.
"""

import json
import math
import os
import sys
import time
import tomllib
from pathlib import Path

import numpy as np
import torch
from torch import nn

# hyperparameters: what an experiment step changes
LR = 0.05
EPOCHS = 30
HIDDEN = 64
BATCH = 64
SEEDS = (0, 1, 2)
CONDITIONS = ("batchnorm", "layernorm", "rmsnorm")
TIME_BUDGET_SEC = 240


def dataset_root() -> Path:
    """The configured cache root: labls passes it in; by hand, labls.toml says it."""
    if os.environ.get("LABLS_DATASET_ROOT"):
        return Path(os.environ["LABLS_DATASET_ROOT"])
    config = tomllib.loads((Path(__file__).parent / "labls.toml").read_text())
    return Path(config["dataset_cache_root"])


def read_idx(path: Path) -> np.ndarray:
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} is missing: stage the data with `labls datasets stage digits --root "
            f"{dataset_root()}`; refusing to train on anything else")
    raw = path.read_bytes()
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def load_digits(root: Path) -> tuple[torch.Tensor, ...]:
    folder = root / "digits" / "raw"
    x_train = read_idx(folder / "train-images-idx3-ubyte")
    y_train = read_idx(folder / "train-labels-idx1-ubyte")
    x_test = read_idx(folder / "t10k-images-idx3-ubyte")
    y_test = read_idx(folder / "t10k-labels-idx1-ubyte")

    def images(x: np.ndarray) -> torch.Tensor:
        return torch.tensor(x.reshape(len(x), -1), dtype=torch.float32) / 255.0

    return images(x_train), torch.tensor(y_train).long(), images(x_test), torch.tensor(y_test).long()


def norm_layer(condition: str, width: int) -> nn.Module:
    if condition == "batchnorm":
        return nn.BatchNorm1d(width)
    if condition == "layernorm":
        return nn.LayerNorm(width)
    return nn.RMSNorm(width)


def train_one(condition: str, seed: int, data: tuple[torch.Tensor, ...],
              device: torch.device) -> dict[str, float]:
    torch.manual_seed(seed)
    x_train, y_train, x_test, y_test = (t.to(device) for t in data)
    model = nn.Sequential(nn.Linear(64, HIDDEN), norm_layer(condition, HIDDEN), nn.ReLU(),
                          nn.Linear(HIDDEN, HIDDEN), norm_layer(condition, HIDDEN), nn.ReLU(),
                          nn.Linear(HIDDEN, 10)).to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=LR, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()
    generator = torch.Generator().manual_seed(seed)
    for _ in range(EPOCHS):
        model.train()
        order = torch.randperm(len(x_train), generator=generator).to(device)
        for start in range(0, len(order), BATCH):
            idx = order[start : start + BATCH]
            if len(idx) < 2:
                continue
            loss = loss_fn(model(x_train[idx]), y_train[idx])
            if not torch.isfinite(loss):
                raise FloatingPointError(f"loss became {loss.item()} ({condition}, seed {seed})")
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    model.eval()
    with torch.no_grad():
        logits = model(x_test)
        return {"test_accuracy": (logits.argmax(1) == y_test).float().mean().item(),
                "test_loss": loss_fn(logits, y_test).item()}


def main() -> int:
    started = time.time()
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    data = load_digits(dataset_root())
    print("DATASET_USED: digits", flush=True)
    print(f"device: {device.type}; train {len(data[0])} images, test {len(data[2])}", flush=True)
    conditions: dict[str, dict[str, object]] = {}
    for condition in CONDITIONS:
        per_seed = {}
        for seed in SEEDS:
            if time.time() - started > TIME_BUDGET_SEC:
                raise TimeoutError("out of time before every condition and seed ran")
            result = train_one(condition, seed, data, device)
            per_seed[str(seed)] = result
            print(f"PER_SEED condition={condition} seed={seed} test_accuracy: "
                  f"{result['test_accuracy']:.4f} test_loss: {result['test_loss']:.4f}", flush=True)
        accs = [r["test_accuracy"] for r in per_seed.values()]
        mean = sum(accs) / len(accs)
        std = math.sqrt(sum((a - mean) ** 2 for a in accs) / len(accs))
        print(f"CONDITION_SUMMARY condition={condition} test_accuracy_mean: {mean:.4f} "
              f"test_accuracy_std: {std:.4f}", flush=True)
        conditions[condition] = {**per_seed, "test_accuracy_mean": mean,
                                 "test_accuracy_std": std}
    overall = sum(c["test_accuracy_mean"] for c in conditions.values()) / len(conditions)
    loss = sum(r["test_loss"] for c in conditions.values() for k, r in c.items()
               if isinstance(r, dict)) / (len(CONDITIONS) * len(SEEDS))
    best = max(conditions, key=lambda c: conditions[c]["test_accuracy_mean"])
    print("---")
    print(f"test_accuracy: {overall:.4f}")
    print(f"test_loss: {loss:.4f}")
    print(f"training_seconds: {time.time() - started:.1f}")
    Path("results.json").write_text(json.dumps({
        "metrics": {"test_accuracy": overall, "test_loss": loss},
        "conditions": conditions, "best_condition": best}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
