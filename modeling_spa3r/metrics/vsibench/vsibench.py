"""VSI-Bench as an ``evaluate`` metric: a thin wrapper over :mod:`modeling_spa3r.vsibench`.

Load it offline from its folder (``evaluate.load("path/to/modeling_spa3r/metrics/vsibench")``);
the results are identical to ``modeling_spa3r.vsibench.score`` + ``aggregate``.
"""

import datasets
import evaluate

from modeling_spa3r import vsibench

_CITATION = """\
@article{yang2024think,
  title={Thinking in Space: How Multimodal Large Language Models See, Remember, and Recall Spaces},
  author={Yang, Jihan and Yang, Shusheng and Gupta, Anjali W. and Han, Rilyn and Fei-Fei, Li and Xie, Saining},
  journal={arXiv preprint arXiv:2412.14171},
  year={2024}
}
"""

_DESCRIPTION = """\
VSI-Bench scoring exactly as the official evaluation (thinking-in-space / lmms-eval): multiple-choice
answers by exact match of the first token, numerical answers by Mean Relative Accuracy over ten
tolerances, relative direction merged as the mean of its three subtypes, `overall` = macro average
over tasks. Results are fractions in [0, 1] keyed by the official names, plus `micro_average`.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `str`): raw generated answers (not stripped).
    references (`list` of `str`): ground truths: an option letter or a number as text.
    question_types (`list` of `str`): the VSI-Bench `question_type` label of each item.
    parser (`str`, optional): "thinking-in-space" (official, default) or "lmms-eval-2026".
    return_item_scores (`bool`, optional): also return the per-item scores under "scores".
Returns:
    dict: official task keys (e.g. "object_counting_MRA:.5:.95:.05", "route_planning_accuracy"),
    "overall" and "micro_average" as fractions; "scores" if requested.
Examples:
    >>> metric = evaluate.load("modeling_spa3r/metrics/vsibench")
    >>> metric.compute(predictions=["6", "B. chair"], references=["5", "B"],
    ...                question_types=["object_counting", "route_planning"])["overall"]
    0.8
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Vsibench(evaluate.Metric):
    """VSI-Bench metric (official scoring and aggregation)."""

    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": datasets.Value("string"),
                    "references": datasets.Value("string"),
                    "question_types": datasets.Value("string"),
                }
            ),
            reference_urls=["https://github.com/vision-x-nyu/thinking-in-space"],
        )

    def _compute(self, predictions, references, question_types, parser=vsibench.DEFAULT_PARSER, return_item_scores=False):
        scores = []
        for index, (prediction, reference, question_type) in enumerate(zip(predictions, references, question_types)):
            try:
                scores.append(vsibench.score(prediction, reference, question_type, parser=parser))
            except ValueError as error:
                raise ValueError(f"item {index}: {error}") from error
        result = vsibench.aggregate(
            {"question_type": question_type, "score": value} for question_type, value in zip(question_types, scores)
        )
        if return_item_scores:
            result["scores"] = scores
        return result
