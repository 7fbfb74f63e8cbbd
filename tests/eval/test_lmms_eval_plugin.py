"""The lmms-eval plugin (only when lmms-eval is installed: it is an optional extra). CI runs this file in a venv
with the `lmms` extra and SPA3R_REQUIRE_LMMS=1, where a missing or broken lmms-eval fails instead of skipping."""

import os

import pytest

if os.environ.get("SPA3R_REQUIRE_LMMS") == "1":
    import lmms_eval  # noqa: F401
else:
    pytest.importorskip("lmms_eval")


def test_spa3_vlm_manifest_registers_with_lmms_eval():
    from lmms_eval.models.registry_v2 import ModelRegistryV2

    from modeling_spa3r.lmms_eval_plugin import Spa3VLM, spa3_vlm_manifest

    registry = ModelRegistryV2()
    registry.register_manifest(spa3_vlm_manifest())
    resolved = registry.resolve("spa3_vlm")
    assert (resolved.model_type, resolved.class_path) == ("simple", "modeling_spa3r.lmms_eval_plugin.Spa3VLM")
    assert registry.get_model_class("spa3_vlm") is Spa3VLM


def test_spa3_vlm_answers_vsibench_requests(tiny_qwen_dir, vsi_fixture_dir):
    from types import SimpleNamespace

    from modeling_spa3r import eval_vsibench as runner
    from modeling_spa3r import vsibench
    from modeling_spa3r.lmms_eval_plugin import Spa3VLM

    model = Spa3VLM(pretrained=str(tiny_qwen_dir), num_frames=4, batch_size=3)
    docs = runner.load_questions(vsi_fixture_dir)
    model.task_dict = {"vsibench": {"test": docs}}

    def doc_to_visual(doc):
        return [str(runner.visual_path(doc, vsi_fixture_dir))]

    requests = [
        SimpleNamespace(
            args=(
                vsibench.build_prompt(doc["question"], doc["question_type"], doc["options"]),
                {"max_new_tokens": 1, "temperature": 0, "until": ["\n\n"]},
                doc_to_visual,
                index,
                "vsibench",
                "test",
            )
        )
        for index, doc in enumerate(docs)
    ]
    answers = model.generate_until(requests)
    frames = [runner.load_frames(runner.visual_path(doc, vsi_fixture_dir), 4) for doc in docs]
    prompts = [request.args[0] for request in requests]
    expected = [runner.generate_answers(model.model, model.processor, [f], [p], 1)[0] for f, p in zip(frames, prompts)]
    assert answers == expected and len(answers) == 10
