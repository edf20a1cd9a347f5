"""Each stdout convention and result-file shape README.md lists: the text experiment code
prints (AutoResearchClaw's conventions as its prompts demand them, and the captured output of
HF Trainer, Lightning and tqdm in tests/fixtures/library_output) and the keys it must give."""

from __future__ import annotations

from pathlib import Path

import pytest

from labls.sandbox.metrics import MetricSet, number
from labls.sandbox.result_files import parse_csv, parse_json
from labls.sandbox.stdout_metrics import parse_chunk

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "library_output"


def printed(text: str | bytes) -> MetricSet:
    """What a run printing `text` gives, read as the output pump reads it (whole chunks)."""
    data = text.encode() if isinstance(text, str) else text
    out = MetricSet()
    parse_chunk(data if data.endswith(b"\n") else data + b"\n", out)
    return out


@pytest.mark.parametrize(("line", "keys"), [
    # AutoResearchClaw's untagged condition lines
    # (each with AutoResearchClaw's own aliases: `<cond>/<metric>` and `<metric>`)
    ("condition=baseline seed=0 metric: 0.8123",
     {"baseline/0/metric": 0.8123, "baseline/metric": 0.8123, "metric": 0.8123}),
    ("condition=baseline metric_mean: 0.8131 metric_std: 0.0030",
     {"baseline/metric_mean": 0.8131, "baseline/metric_std": 0.003, "metric_mean": 0.8131,
      "metric_std": 0.003}),
    ("condition=baseline regime=low_noise accuracy: 0.9801",
     {"baseline/low_noise/accuracy": 0.9801, "baseline/accuracy": 0.9801,
      "accuracy": 0.9801}),
    ("condition=proposed success_rate: 2/3",
     {"proposed/success_rate": 2 / 3, "success_rate": 2 / 3}),
    ("SUMMARY condition=proposed metric=accuracy mean=0.9761 std=0.0006",
     {"proposed/accuracy_mean": 0.9761, "proposed/accuracy_std": 0.0006,
      "proposed/accuracy": 0.9761, "accuracy_mean": 0.9761, "accuracy_std": 0.0006,
      "accuracy": 0.9761}),
    ("condition=bn metric=0.9", {"bn/metric": 0.9, "metric": 0.9, "bn": 0.9}),
    ("PER_SEED condition=bn seed=1 accuracy: 0.981",
     {"bn/1/accuracy": 0.981, "bn/accuracy": 0.981, "accuracy": 0.981}),
    ("GAP_TO_BN: condition=ln gap: 0.01", {"ln/gap": 0.01, "gap": 0.01}),
    ('GAP_TO_BN: {"ln": 0.01, "gn": -0.02}', {"ln/gap_to_bn": 0.01, "gn/gap_to_bn": -0.02}),
    # names with spaces, unicode names, logging / rank prefixes, ANSI colours, \r redraws
    ("UCB (Stochastic) cumulative_regret: 361.9233",
     {"UCB (Stochastic) cumulative_regret": 361.9233}),
    ("METRIC µs=5", {"µs": 5.0}),
    ("INFO:root:val_loss: 0.25", {"val_loss": 0.25}),
    ("[rank0] val_loss: 0.5", {"val_loss": 0.5}),
    ("[rank1]: PER_SEED condition=bn seed=0 acc: 0.9",
     {"bn/0/acc": 0.9, "bn/acc": 0.9, "acc": 0.9}),
    ("seed=3 loss: 0.5", {"loss": 0.5}),  # one tag before `name: value`
    ("2026-12-03 10:00:00,123 - train - INFO - val_acc: 0.75", {"val_acc": 0.75}),
    ("\x1b[32mval_acc: 0.8\x1b[0m", {"val_acc": 0.8}),
    ("epoch 3 50%|#####|\r\rval_accuracy: 0.91", {"val_accuracy": 0.91}),
    # values: hex and thousands exactly, a comma list is not a thousands number
    ("METRIC flags=0x1F tokens=1,234 loss=0.5", {"flags": 31.0, "tokens": 1234.0,
                                                 "loss": 0.5}),
    ("METRIC a=1,b=2", {"a": 1.0, "b": 2.0}),
    # condition names round-trip: `/` and `%` are percent-encoded in the flat key
    ("condition=relu/bn seed=0 accuracy: 0.9",
     {"relu%2Fbn/0/accuracy": 0.9, "relu%2Fbn/accuracy": 0.9, "accuracy": 0.9}),
    ('condition="with space" seed=0 accuracy: 0.9',
     {"with space/0/accuracy": 0.9, "with space/accuracy": 0.9, "accuracy": 0.9}),
    ("condition=50% accuracy: 0.9", {"50%25/accuracy": 0.9, "accuracy": 0.9}),
    # a bare JSON object line, Python dict reprs
    ('{"loss": 0.5, "step": 3}', {"loss": 0.5, "step": 3.0}),
])
def test_a_printed_line_gives_its_keys(line: str, keys: dict[str, float]) -> None:
    assert printed(line).values == pytest.approx(keys)


@pytest.mark.parametrize("line", [
    "METRIC tokens=1,2345", "time: 12:30", "a=1 b=2 loss: 0.5", "note: see 1.5 above",
    "epoch 3: loss 0.1",
    "PER_SEED seed=0 accuracy: 0.5", "  train_runtime            = 0:00:00.11",
    "  total_flos               =        0GF", "{'a': True}", "value: 1.2.3",
])
def test_a_line_that_is_no_metric_gives_nothing(line: str) -> None:
    assert printed(line).values == {}


def test_the_structured_conditions_keep_the_raw_names() -> None:
    m = printed("condition=relu/bn seed=0 accuracy: 0.9\n"
                "condition=baseline regime=low_noise accuracy: 0.98\n")
    assert m.conditions == {"relu/bn": {"0": {"accuracy": 0.9}},
                            "baseline": {"low_noise": {"accuracy": 0.98}}}


def test_an_alias_never_replaces_a_key_printed_as_itself() -> None:
    m = printed("accuracy: 0.5\ncondition=bn seed=0 accuracy: 0.9\n")
    assert m.values["accuracy"] == 0.5 and m.values["bn/accuracy"] == 0.9
    later = printed("condition=bn seed=0 accuracy: 0.9\naccuracy: 0.5\n")
    assert later.values["accuracy"] == 0.5 and "accuracy" not in later.aliases


def test_hf_trainer_output() -> None:
    """transformers 5's Trainer: log dicts of strings, and the `***** metrics` blocks."""
    m = printed((FIXTURES / "hf_trainer.txt").read_bytes())
    assert m.values["loss"] == 0.694 and m.series["loss"].seen == 4  # every log dict a point
    assert m.values["eval_accuracy"] == 0.4375 and m.values["eval_loss"] == 0.6939
    assert m.values["train_loss"] == 0.6935 and m.values["epoch"] == 2.0
    assert m.values["eval_samples_per_second"] == 1690.613  # from the block, printed last
    assert "train_runtime" in m.values and m.values["train_runtime"] == 0.119  # its dict's
    assert "total_flos" not in m.values  # `0GF`: no number


def test_lightning_output() -> None:
    """Lightning 2 with rich: the progress bar's metrics and the test-results table."""
    m = printed((FIXTURES / "lightning.txt").read_bytes())
    assert m.values["test_acc"] == 0.8125 and m.values["test_loss"] == 0.548468828201294
    assert m.values["train_loss"] == 0.51 and m.values["val_acc"] == 0.812


def test_tqdm_output() -> None:
    """tqdm's postfix values (`set_postfix`, `set_postfix_str`) and a line after `leave=False`."""
    m = printed((FIXTURES / "tqdm.txt").read_bytes())
    assert m.values == {"acc": 0.8, "loss": 0.2, "val_accuracy": 0.91, "val_loss": 0.3}
    assert [v for _, v in m.series["loss"].points()] == [1.0, 0.5, 0.333, 0.25, 0.2]


def test_values_are_exact_or_refused() -> None:
    assert number("0x1F") == 31 and number("1,234") == 1234 and number("1,234.5") == 1234.5
    assert number("2/3") == pytest.approx(2 / 3) and number("'0.6929'") == 0.6929
    for bad in ("1,2345", "1.2.3", "5ms", "12:30", "2/0", True, None, "0x"):
        assert number(bad) is None, bad


@pytest.mark.parametrize(("data", "keys"), [
    ({"conditions": {"bn": {"metrics": {"acc": 0.92}}}}, {"bn/acc": 0.92}),
    ({"conditions": {"bn": {"0": {"acc": 0.9}, "acc_mean": 0.91}}},
     {"bn/0/acc": 0.9, "bn/acc_mean": 0.91}),
    ({"conditions": [{"name": "bn", "acc": 0.9}, {"name": "ln", "seed": 1, "acc": 0.8}]},
     {"bn/acc": 0.9, "ln/1/acc": 0.8}),
    ([{"condition": "bn", "metrics": {"acc": 0.9}}], {"bn/acc": 0.9}),
    ({"per_condition": {"bn": {"acc": 0.9}}}, {"bn/acc": 0.9}),
    ({"condition_summaries": {"bn": {"acc": {"mean": 0.9, "std": 0.01}}}},
     {"bn/acc_mean": 0.9, "bn/acc_std": 0.01}),
    ({"accuracy": {"mean": 0.97, "std": 0.01}}, {"accuracy_mean": 0.97, "accuracy_std": 0.01}),
    ({"metrics": {"val": {"acc": 0.9}, "loss": 0.2}}, {"val/acc": 0.9, "loss": 0.2}),
    ({"conditions": {"relu/bn": {"acc": 0.9}}}, {"relu%2Fbn/acc": 0.9}),
])
def test_results_json_shapes(data: object, keys: dict[str, float]) -> None:
    assert parse_json(data).values == pytest.approx(keys)


@pytest.mark.parametrize(("data", "why"), [
    (3, "not int"), ({"note": "x"}, "no metric values"), ({"conditions": 5}, "`conditions`"),
    ([{"acc": 1}], "no `name`"),
])
def test_a_results_json_of_a_wrong_shape_says_why(data: object, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        parse_json(data)


@pytest.mark.parametrize(("text", "keys"), [
    ("metric,value\nacc,0.9\nloss,0.2\n", {"acc": 0.9, "loss": 0.2}),
    ("condition,seed,metric,value\nbn,0,acc,0.9\n", {"bn/0/acc": 0.9}),
    ("method,acc,loss\nbn,0.9,0.2\nln,0.8,0.3\n",
     {"bn/acc": 0.9, "bn/loss": 0.2, "ln/acc": 0.8, "ln/loss": 0.3}),
    ("epoch,loss,acc\n1,0.5,0.7\n2,0.4,0.8\n", {"epoch": 2.0, "loss": 0.4, "acc": 0.8}),
])
def test_results_csv_shapes(text: str, keys: dict[str, float]) -> None:
    assert parse_csv(text).values == pytest.approx(keys)


def test_a_csv_log_keeps_each_row_as_a_point_with_its_epoch() -> None:
    m = parse_csv("epoch,loss\n1,0.5\n2,0.4\n3,0.3\n")
    assert m.series["loss"].points() == [(1, 0.5), (2, 0.4), (3, 0.3)]
    with pytest.raises(ValueError, match="no numeric column"):
        parse_csv("name,note\na,b\n")


def test_a_watched_metric_diverges_after_its_grace_values() -> None:
    m = MetricSet(watched=frozenset({"loss"}), grace=2)
    for value in (1.0, float("nan"), 0.5, float("nan"), float("inf")):  # finite again: reset
        m.put("loss", value)
    assert m.diverged is None
    m.put("acc", float("nan"))  # not watched: only noted
    m.put("loss", float("nan"))
    assert m.diverged == ("loss", "nan") and m.non_finite_first == {"loss": "nan", "acc": "nan"}
