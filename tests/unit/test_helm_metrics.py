"""HELM main metrics from schema.json, one metric and one declared scale per dataset,
per-dataset metric and threshold, strict text identity, grouped skip warnings."""

from __future__ import annotations

import logging

import pytest

from benchroute import DataError, load_helm
from tests.helm_builder import write_run, write_schema

IDS = ["id1", "id2", "id3", "id4"]


def _judge_suite(root):
    """A small safety + MedHELM-like suite: judge scores on [0, 1], a 1–5 jury rubric from the
    package's table, a 1–10 rubric whose range only the schema declares, and a CRLF variant of
    one input text."""
    suite = root / "runs" / "judge-v1"
    write_schema(suite, {"harm_bench": "harm_bench_score", "med_dialog": "med_dialog_accuracy",
                         "helpfulness": "helpfulness_rating"},
                 metrics=[{"name": "helpfulness_rating", "min": 1, "max": 10,
                           "lower_is_better": False}])
    harm = {"org/a": [1.0, 0.0, 0.75, 0.25], "org/b": [0.5, 1.0, 0.0, 1.0]}
    med = {"org/a": [5, 4, 1, 3], "org/b": [2, 1, 4.5, 5]}
    helpful = {"org/a": [10, 1, 7, 5.5], "org/b": [3, 9, 1, 6]}
    for model in ("org/a", "org/b"):
        write_run(suite, "harm_bench", model,
                  {i: {"harm_bench_score": v, "num_prompt_tokens": 50}
                   for i, v in zip(IDS, harm[model])})
        crlf = {"id1": "Line one\r\nLine two\r\n"} if model == "org/b" else \
            {"id1": "Line one\nLine two"}
        write_run(suite, "med_dialog", model,
                  {i: {"med_dialog_accuracy": v, "rouge_l": 0.2} for i, v in zip(IDS, med[model])},
                  texts=crlf)
        write_run(suite, "helpfulness", model,
                  {i: {"helpfulness_rating": v} for i, v in zip(IDS, helpful[model])})
    return root / "runs"


def test_judge_and_rubric_suite_loads_with_main_metrics(tmp_path):
    data = load_helm(_judge_suite(tmp_path))
    assert data.datasets == ["harm_bench", "helpfulness", "med_dialog"]
    assert len(data) == 3 * 2 * 4 and data.n_instances == 12
    assert data.report.skipped == []
    assert data.report.metrics == {"harm_bench": "harm_bench_score",
                                   "helpfulness": "helpfulness_rating",
                                   "med_dialog": "med_dialog_accuracy"}
    assert data.report.scales == {"harm_bench": "known", "helpfulness": "declared",
                                  "med_dialog": "known"}
    acc = data.frame.groupby(["dataset", "model"])["correct"].sum()
    # harm_bench [0, 1] at 0.5: a: 1, 0.75 | b: 0.5, 1, 1
    assert acc["harm_bench"].tolist() == [2, 3]
    # med_dialog 1–5: (s-1)/4 >= 0.5 iff s >= 3: a: 5, 4, 3 | b: 4.5, 5
    assert acc["med_dialog"].tolist() == [3, 2]
    # helpfulness 1–10: (s-1)/9 >= 0.5 iff s >= 5.5: a: 10, 7, 5.5 | b: 9, 6
    assert acc["helpfulness"].tolist() == [3, 2]
    # raw score kept beside the label
    row = data.frame[(data.frame["dataset"] == "med_dialog") & (data.frame["model"] == "org/a")
                     & (data.frame["instance_id"] == "id3")].iloc[0]
    assert (row["score"], row["correct"]) == (1.0, 0.0)
    # the CRLF variant is the same instance, not a conflict
    assert "text_conflict_skipped" not in data.report.counts
    texts = data.frame[(data.frame["dataset"] == "med_dialog")
                       & (data.frame["instance_id"] == "id1")]["text"]
    assert texts.tolist() == ["Line one\nLine two"] * 2


def test_metric_mapping_and_name(tmp_path):
    root = _judge_suite(tmp_path)
    data = load_helm(root, metric={"med_dialog": "rouge_l"})
    assert data.report.metrics["med_dialog"] == "rouge_l"
    assert data.report.metrics["harm_bench"] == "harm_bench_score"
    # rouge_l at 0.2 everywhere: all labels 0, warned with the fix named
    assert any("med_dialog" in w and "threshold=" in w for w in data.report.warnings)
    fixed = load_helm(root, metric={"med_dialog": "rouge_l"}, threshold={"med_dialog": 0.1})
    assert fixed.frame.loc[fixed.frame["dataset"] == "med_dialog", "correct"].eq(1).all()
    assert fixed.frame.loc[fixed.frame["dataset"] == "harm_bench", "correct"].sum() == 5
    with pytest.raises(DataError, match=r"metric mapping names \['med_dialgo'\].*known"):
        load_helm(root, metric={"med_dialgo": "rouge_l"})


def test_no_schema_falls_back_to_priority_list(tmp_path):
    suite = tmp_path / "s"
    for model in ("org/a", "org/b"):
        write_run(suite, "qa", model, {"id1": {"f1_score": 0.9, "exact_match": 0},
                                       "id2": {"f1_score": 0.2, "exact_match": 1}})
    data = load_helm(suite)
    assert data.report.metrics == {"qa": "exact_match"}
    write_schema(suite, {"qa": "f1_score"})
    assert load_helm(suite).report.metrics == {"qa": "f1_score"}


def test_schema_main_metric_absent_falls_back_with_note(tmp_path):
    suite = tmp_path / "s"
    write_schema(suite, {"qa": "bbq_accuracy"})  # aggregate-only in HELM
    write_run(suite, "qa", "org/a", {"id1": {"quasi_exact_match": 1}, "id2": {"quasi_exact_match": 0}})
    data = load_helm(suite)
    assert data.report.metrics == {"qa": "quasi_exact_match"}
    assert any("'bbq_accuracy' is not a per-instance stat" in n for n in data.report.notes)


def test_specific_group_wins_over_general(tmp_path):
    suite = tmp_path / "s"
    write_schema(suite, {"synthetic_reasoning": "exact_match",
                         "synthetic_reasoning_natural": "f1_set_match"})
    write_run(suite, "srn:difficulty=easy", "org/a",
              {"id1": {"exact_match": 0, "f1_set_match": 0.8}},
              groups=["synthetic_reasoning", "synthetic_reasoning_natural"])
    assert load_helm(suite).report.metrics == {"srn:difficulty=easy": "f1_set_match"}


def test_schema_in_release_folder_and_schema_star(tmp_path):
    out = tmp_path / "benchmark_output"
    write_schema(out / "releases" / "v1", {"qa": "f1_score"})
    write_run(out / "runs" / "s1", "qa", "org/a", {"id1": {"f1_score": 0.9, "exact_match": 0}})
    assert load_helm(out).report.metrics == {"qa": "f1_score"}
    other = tmp_path / "other"
    write_schema(other, {"qa": "f1_score"}, name="schema_lite.json")
    write_run(other, "qa", "org/a", {"id1": {"f1_score": 0.9, "exact_match": 0}})
    assert load_helm(other).report.metrics == {"qa": "f1_score"}
    # a single run directory finds its suite's schema too
    run = next(p for p in other.iterdir() if p.is_dir())
    assert load_helm(run).report.metrics == {"qa": "f1_score"}


def test_one_metric_per_dataset_odd_run_skipped(tmp_path):
    suite = tmp_path / "s"
    write_schema(suite, {"wb": "wildbench_score"})
    write_run(suite, "wb", "org/a", {"id1": {"wildbench_score": 8}, "id2": {"wildbench_score": 2}})
    write_run(suite, "wb", "org/b", {"id1": {"wildbench_score": 3}, "id2": {"wildbench_score": 9}})
    # the judge failed for this model: only exact_match, the fallback
    write_run(suite, "wb", "org/c", {"id1": {"exact_match": 1}, "id2": {"exact_match": 1}})
    data = load_helm(suite)
    assert data.models == ["org/a", "org/b"]
    assert data.report.metrics == {"wb": "wildbench_score"}
    (where, why), = data.report.skipped
    assert "org_c" in where
    assert "scored by 'wildbench_score' (models ['org/a', 'org/b'])" in why
    assert "it would use 'exact_match'" in why


def test_one_metric_per_dataset_rescores_when_possible(tmp_path):
    suite = tmp_path / "s"
    write_schema(suite, {"qa": "f1_score"})
    write_run(suite, "qa", "org/a", {"id1": {"f1_score": 0.9, "exact_match": 0}})
    write_run(suite, "qa", "org/b", {"id1": {"f1_score": 0.4, "exact_match": 0}})
    # this run's group is not in the schema: on its own it would use exact_match
    write_run(suite, "qa", "org/c", {"id1": {"f1_score": 0.7, "exact_match": 0}}, groups=["x"])
    data = load_helm(suite)
    assert set(data.frame["metric"]) == {"f1_score"}
    assert data.report.counts["runs_rescored_to_dataset_metric"] == 1
    assert data.frame.set_index("model")["correct"].to_dict() == {
        "org/a": 1.0, "org/b": 0.0, "org/c": 1.0}


def test_exact_match_values_1_2_are_not_a_rubric(tmp_path):
    suite = tmp_path / "s"
    write_run(suite, "qa", "org/a", {"id1": {"exact_match": 1}, "id2": {"exact_match": 2}})
    write_run(suite, "qa", "org/b", {"id1": {"exact_match": 1}, "id2": {"exact_match": 0}})
    data = load_helm(suite)
    assert data.models == ["org/b"]
    assert "outside its range [0, 1] (known)" in data.report.skipped[0][1]


def test_rubric_all_ones_is_not_all_correct(tmp_path):
    suite = tmp_path / "s"
    write_run(suite, "md", "org/a", {i: {"med_dialog_accuracy": 1} for i in IDS})
    data = load_helm(suite)
    assert data.report.scales == {"md": "known"}
    assert data.frame["correct"].eq(0).all()
    assert any("every label is 0" in w for w in data.report.warnings)


def test_unknown_metric_scale_guessed_and_warned_or_from_caller(tmp_path, caplog):
    suite = tmp_path / "s"
    write_run(suite, "t", "org/a", {"id1": {"custom": 0.2}, "id2": {"custom": 0.9}})
    with caplog.at_level(logging.WARNING):
        data = load_helm(suite, metric="custom")
    assert data.report.scales == {"t": "guessed"}
    assert any("guessed [0, 1]" in w for w in data.report.warnings)
    assert "guessed" in caplog.text
    caller = load_helm(suite, metric="custom", score_range={"t": (0, 2)})
    assert caller.report.scales == {"t": "caller"}
    assert caller.frame["correct"].tolist() == [0.0, 0.0]  # 0.9 / 2 < 0.5
    assert not any("guessed" in w for w in caller.report.warnings)


def test_lower_is_better_from_schema_with_caller_range(tmp_path):
    suite = tmp_path / "s"
    write_schema(suite, {"asr": "wer_score"}, metrics=[{"name": "wer_score", "lower_is_better": True}])
    write_run(suite, "asr", "org/a", {"id1": {"wer_score": 0.1}, "id2": {"wer_score": 0.9}})
    with pytest.raises(DataError, match="lower-is-better and no range is known"):
        load_helm(suite)
    data = load_helm(suite, score_range=(0, 1))
    assert data.frame.set_index("instance_id")["correct"].to_dict() == {"id1": 1.0, "id2": 0.0}


@pytest.mark.parametrize("bad", [0, -0.1, 1.5, float("nan"), "0.5", True, {"t": 2.0}, 10**400])
def test_threshold_outside_unit_interval(tmp_path, bad):
    write_run(tmp_path / "s", "t", "org/a", {"id1": {"exact_match": 1}})
    with pytest.raises(DataError, match=r"threshold must be a number in \(0, 1\]"):
        load_helm(tmp_path / "s", threshold=bad)


def test_real_text_conflict_skipped_or_strict(tmp_path):
    suite = tmp_path / "s"
    write_run(suite, "t", "org/a", {"id1": {"exact_match": 1}, "id2": {"exact_match": 0}},
              texts={"id1": "What is 2+2?"})
    write_run(suite, "t", "org/b", {"id1": {"exact_match": 1}, "id2": {"exact_match": 1}},
              texts={"id1": "What is 3+3?"})
    data = load_helm(suite)
    assert data.n_instances == 1 and data.report.counts["text_conflict_skipped"] == 1
    with pytest.raises(DataError, match="first difference at character 8"):
        load_helm(suite, strict=True)


def test_skip_warnings_one_line_per_reason(tmp_path, caplog):
    suite = tmp_path / "s"
    write_run(suite, "ok", "org/a", {"id1": {"exact_match": 1}})
    for k in range(10):
        write_run(suite, f"junk{k}", "org/a", {"id1": {"num_bytes": 3.0, "foo": 0.5,
                                                       "zzz": 7.0}})
    for k in range(2):
        (suite / f"half{k}:model=org_a").mkdir()
        (suite / f"half{k}:model=org_a" / "run_spec.json").write_text("{}")
    with caplog.at_level(logging.WARNING):
        data = load_helm(suite)
    assert len(data.report.skipped) == 12
    lines = [w for w in data.report.warnings if "HELM runs skipped" in w]
    assert len(lines) == 2
    assert lines[0].startswith("10 of 13 HELM runs skipped: no correctness metric")
    assert "and 7 more" in lines[0] and all(len(w) < 700 for w in lines)
    assert lines[1].startswith("2 of 13 HELM runs skipped: incomplete run")
    # the list of stats is complete, likely metrics first
    junk = [why for where, why in data.report.skipped if "junk" in where]
    assert junk == ["no correctness metric among per-instance stats "
                    "(has: foo; other stats: num_bytes, zzz)"] * 10


def test_shared_like_mmlu_keeps_exact_match(tmp_path):
    suite = tmp_path / "runs" / "v1"
    write_schema(suite, {"mmlu": "exact_match"})
    for model in ("org/a", "org/b"):
        write_run(suite, "mmlu:subject=anatomy,method=multiple_choice_joint", model,
                  {f"id{i}": {"exact_match": float(i % 2), "quasi_exact_match": 1.0}
                   for i in range(5)}, groups=["mmlu"])
    data = load_helm(tmp_path / "runs")
    assert data.report.metrics == {"mmlu:subject=anatomy,method=multiple_choice_joint": "exact_match"}
    assert len(data) == 10 and data.frame["correct"].sum() == 4


def test_shared_helm_suites_report_metrics_and_scales(helm_fixtures_dir, helm_mmlu):
    fake = load_helm(helm_fixtures_dir / "fake-v1_benchmark_output")
    assert fake.report.metrics == {"simple_mcqa": "exact_match"}  # schema main_name
    assert fake.report.scales == {"simple_mcqa": "known"}
    assert fake.frame["prompt_tokens"].notna().all()
    two = load_helm(helm_fixtures_dir / "offline-test2")
    assert two.report.metrics == {"dyck_language_np=2": "exact_match_indicator",
                                  "synthetic_reasoning:mode=pattern_match": "exact_match",
                                  "synthetic_reasoning_natural:difficulty=easy": "exact_set_match"}
    assert set(helm_mmlu.report.metrics.values()) == {"exact_match"}
    assert len(helm_mmlu.report.metrics) == 57 and helm_mmlu.report.warnings == []


def test_one_model_run_twice_on_a_dataset_follows_the_store_s_rule(tmp_path):
    """From fuzzing the command line: a run of the same model and dataset in a second suite,
    with other results, was dropped silently, even with ``strict`` (counted only as merged
    rows). Exact repeats are merged; a conflict is skipped and reported, or under ``strict``
    an error naming the instance."""
    runs = tmp_path / "runs"
    for suite, flip in (("v1", False), ("v2", False)):
        write_run(runs / suite, "mmlu:subject=anatomy", "org/a",
                  {i: {"exact_match": float((i == "id1") != flip)} for i in IDS})
    same = load_helm(runs)
    assert len(same) == 4 and same.report.counts["duplicate_rows_merged"] == 4
    conflict = tmp_path / "conflict" / "runs"
    for suite, flip in (("v1", set()), ("v2", {"id1", "id2"})):  # two results differ
        write_run(conflict / suite, "mmlu:subject=anatomy", "org/a",
                  {i: {"exact_match": float((i == "id1") != (i in flip))} for i in IDS})
    data = load_helm(conflict)
    assert data.report.counts["duplicate_conflict_skipped"] == 2 and len(data) == 2
    assert any("skipped 2 repeated id(s) whose scores differ" in w for w in data.report.warnings)
    with pytest.raises(DataError, match=r"instance_id='id1' appears more than once and its scores "
                                        r"differ .*one id must name one input"):
        load_helm(conflict, strict=True)


def test_a_canonical_run_in_two_suites_is_no_augmented_copy(tmp_path):
    """HELM classic names its base runs "data_augmentation=canonical": the same such run in two
    suites was taken for an augmented copy and the second suite dropped silently, even with
    strict (found by a review). An augmented run's copies of its base run's instances are still
    merged."""
    scenario = "mmlu:subject=anatomy,data_augmentation=canonical"
    runs = tmp_path / "runs"
    for suite, flip in (("v1", set()), ("v2", {"id1", "id2"})):
        write_run(runs / suite, scenario, "org/a",
                  {i: {"exact_match": float((i == "id1") != (i in flip))} for i in IDS})
    with pytest.raises(DataError, match=r"appears more than once and its scores differ"):
        load_helm(runs, strict=True)
    assert load_helm(runs).report.counts["duplicate_conflict_skipped"] == 2
    base = tmp_path / "base" / "runs" / "v1"
    write_run(base, "mmlu:subject=anatomy", "org/a", {i: {"exact_match": 1.0} for i in IDS})
    write_run(base, "mmlu:subject=anatomy,data_augmentation=robustness", "org/a",
              {i: {"exact_match": 0.0} for i in IDS})  # its unperturbed copies: the base's kept
    data = load_helm(tmp_path / "base" / "runs", strict=True)
    assert len(data) == 4 and data.report.counts["duplicate_rows_merged"] == 4
    assert data.frame["correct"].eq(1.0).all()


def test_runs_that_differ_by_more_than_their_augmentation_are_no_copies(tmp_path):
    """From a review: two canonical runs of one model whose names differ by an argument the
    dataset key strips (stop=...) are two runs, not a base and its copy; their conflict was
    merged silently, even with strict."""
    runs = tmp_path / "runs" / "v1"
    for stop, flip in (("hash", set()), ("none", {"id1", "id2"})):
        write_run(runs, f"mmlu:subject=anatomy,stop={stop},data_augmentation=canonical", "org/a",
                  {i: {"exact_match": float((i == "id1") != (i in flip))} for i in IDS})
    with pytest.raises(DataError, match=r"appears more than once and its scores differ"):
        load_helm(tmp_path / "runs", strict=True)
