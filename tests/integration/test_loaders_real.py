"""Loaders on the real per-sample results in ../shared/data."""

from __future__ import annotations

import pytest

import benchroute
from benchroute import load_helm, load_table


def test_helm_mmlu_llama3_accuracies(helm_mmlu):
    assert len(helm_mmlu.datasets) == 57
    assert helm_mmlu.n_instances == 57 * 20
    acc = helm_mmlu.model_accuracy()
    expected = {
        "together/Llama-3-70b-chat-hf": 0.730,
        "groq/llama3-70b-8192": 0.707,
        "huggingface/Meta-Llama-3-8B": 0.646,
        "together/Llama-3-8b-chat-hf": 0.546,
        "groq/llama3-8b-8192": 0.380,
    }
    assert set(acc.index) == set(expected)
    for model, value in expected.items():
        assert acc[model] == pytest.approx(value, abs=0.0005)
    coverage = helm_mmlu.frame.groupby("model")["dataset"].nunique()
    assert coverage["groq/llama3-70b-8192"] == 55
    assert (coverage.drop("groq/llama3-70b-8192") == 57).all()
    missing = helm_mmlu.missing_cells().set_index("model")
    assert missing.loc["groq/llama3-70b-8192", "missing"] == 40


def test_helm_dataset_key_drops_model(helm_mmlu):
    assert "mmlu:subject=anatomy,method=multiple_choice_joint" in helm_mmlu.datasets
    assert not any("model=" in d for d in helm_mmlu.datasets)
    mat = helm_mmlu.correctness_matrix("mmlu:subject=anatomy,method=multiple_choice_joint")
    assert mat.shape == (20, 5)
    assert set(mat.stack().unique()) <= {0.0, 1.0}


def test_helm_single_run_and_suite_paths(helm_mmlu_dir):
    run = next(p for p in (helm_mmlu_dir / "v1").iterdir() if "subject=anatomy" in p.name)
    one = load_helm(run)
    assert len(one) == 20 and one.models == [one.frame["model"].iloc[0]]
    suite = load_helm(helm_mmlu_dir / "v1")
    assert len(suite) == 5660


def test_helm_fixtures_perturbations(helm_fixtures_dir):
    suite = helm_fixtures_dir / "fake-v1_benchmark_output"
    plain = load_helm(suite)
    correct = plain.frame.groupby("model")["correct"].agg(["sum", "count"])
    assert correct.loc["fakeorg/parity-always-a"].tolist() == [6, 12]
    assert correct.loc["fakeorg/parity-mod3"].tolist() == [5, 12]
    assert plain.report.counts["perturbed_skipped"] == 24
    assert not plain.frame["instance_id"].str.contains("|", regex=False).any()

    withp = load_helm(suite, include_perturbed=True)
    assert withp.report.counts["perturbed_included"] == 24
    assert "perturbed_skipped" not in withp.report.counts
    perturbed = withp.frame[withp.frame["instance_id"].str.contains("|", regex=False)]
    assert len(perturbed) == 24
    assert set(perturbed["model"]) == {"fakeorg/parity-mod3"}


def test_helm_incomplete_run_reported_not_fatal(helm_fixtures_dir, caplog):
    data = load_helm(helm_fixtures_dir / "offline-test")
    skipped = dict(data.report.skipped)
    incomplete = [w for w in skipped if "simple_short_answer_qa" in w]
    assert incomplete and "incomplete run" in skipped[incomplete[0]]
    assert "skipped" in caplog.text
    assert "simple_mcqa" in data.datasets


def test_helm_named_metric(helm_fixtures_dir):
    data = load_helm(helm_fixtures_dir / "offline-test2", metric="exact_match")
    assert set(data.frame["metric"]) == {"exact_match"}
    default = load_helm(helm_fixtures_dir / "offline-test2")
    metrics = default.frame.groupby("dataset")["metric"].first()
    assert metrics["synthetic_reasoning_natural:difficulty=easy"] == "exact_set_match"


def test_routerdc_preset(routerdc_dir):
    data = load_table(routerdc_dir, preset="routerdc")
    assert data.n_instances == 20_600
    assert len(data.models) == 7
    assert len(data.datasets) == 10
    mmlu = data.frame[data.frame["dataset"] == "mmlu"]
    assert set(mmlu["split"]) == {"train", "test"}
    # multiple choice: correct iff score > 0, even for a tiny positive confidence
    assert ((mmlu["score"] > 0) == (mmlu["correct"] == 1)).all()
    gsm = data.frame[data.frame["dataset"] == "gsm8k"]
    assert ((gsm["score"] >= 0.5) == (gsm["correct"] == 1)).all()


def test_routellm_preset(routellm_dir):
    data = load_table(routellm_dir, preset="routellm")
    mmlu = data.frame[data.frame["dataset"].str.startswith("mmlu_")]
    gpt4 = mmlu[mmlu["model"] == "gpt-4-1106-preview"]
    assert len(gpt4) == 14_042
    assert gpt4["correct"].sum() == 11_315
    mixtral = mmlu[mmlu["model"] == "mistralai/Mixtral-8x7B-Instruct-v0.1"]
    assert mixtral["correct"].sum() == 9_560
    gsm = data.frame[(data.frame["dataset"] == "gsm8k") & (data.frame["model"] == "gpt-4-1106-preview")]
    assert gsm["correct"].sum() == 1_130


def test_alpaca_eval_preset():
    from tests.conftest import DATA

    if not (DATA / "alpaca_eval").is_dir():
        pytest.skip("no shared alpaca_eval")
    data = load_table(DATA / "alpaca_eval", preset="alpaca_eval")
    assert data.n_instances == 805 and len(data.models) == 58
    assert data.frame["score"].between(0, 1).all()
    assert ((data.frame["score"] > 0.5) == (data.frame["correct"] == 1)).all()
    v1 = load_table(DATA / "alpaca_eval", preset="alpaca_eval", annotator="alpaca_eval_gpt4")
    assert len(v1.models) == 53


@pytest.mark.parametrize("folder", ["helm_mmlu_llama3", "helm_offline_fixtures", "routerdc",
                                    "routellm_evals", "alpaca_eval"])
def test_load_autodetects_each_shared_folder(folder):
    from tests.conftest import DATA

    if not (DATA / folder).is_dir():
        pytest.skip(f"no shared {folder}")
    data = benchroute.load(DATA / folder)
    assert len(data.models) >= 2 and len(data.datasets) >= 1
    assert data.report.sources == [str(DATA / folder)]
