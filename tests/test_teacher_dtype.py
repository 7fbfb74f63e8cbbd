"""teacher_dtype (issue 15): frozen teachers in bf16, the student and its losses in float32."""

import pytest
import torch

from modeling_spa3r import Spa3RConfig, Spa3RForPretraining
from modeling_spa3r.training.pretrain import ModelArguments, build_model

from .fixtures_spa3r import tiny_spa3r_config

VIEW_MASK = torch.tensor([[False, True, False, True], [False, False, True, True]])


def _pair():
    torch.manual_seed(0)
    fp32 = Spa3RForPretraining(tiny_spa3r_config()).train()
    bf16 = Spa3RForPretraining(tiny_spa3r_config(teacher_dtype="bfloat16")).train()
    bf16.load_state_dict(fp32.state_dict())
    return fp32, bf16


def _output_dtypes(model, images, asymmetric):
    seen = {}
    modules = {
        "aggregator": model.spa3r.aggregator.global_blocks[0].mlp.fc1,
        "dinov3": model.semantic_teacher.model.model.layer[0].mlp.up_proj,
        "camera_head": model.camera_head.pose_branch.fc1,
        "depth_head": model.depth_head.projects[0],
        "encoder": model.spa3r.encoder.blocks[0].mlp.fc1,
        "decoder": model.decoder.blocks[0].mlp.fc1,
        "geo_head": model.heads["geo"].fc2,
    }

    def record(name):
        def hook(module, args, output):
            seen.setdefault(name, output.dtype)

        return hook

    handles = [module.register_forward_hook(record(name)) for name, module in modules.items()]
    out = model(images, view_mask=VIEW_MASK, asymmetric_masking=asymmetric)
    for handle in handles:
        handle.remove()
    return seen, out


@pytest.mark.parametrize("asymmetric", [True, False])
def test_bf16_teachers_fp32_student_and_close_loss(images, asymmetric):
    fp32, bf16 = _pair()
    reference_dtypes, reference = _output_dtypes(fp32, images, asymmetric)
    dtypes, out = _output_dtypes(bf16, images, asymmetric)
    assert set(reference_dtypes.values()) == {torch.float32}
    assert dtypes["aggregator"] == dtypes["dinov3"] == torch.bfloat16
    # the VGGT heads keep their float32 rule; the student runs in float32
    for name in ("camera_head", "depth_head", "encoder", "decoder", "geo_head"):
        assert dtypes[name] == torch.float32, name
    for field in ("loss", "target_geo", "target_sem", "target_depth", "extrinsics", "context_features", "pred_geo"):
        assert getattr(out, field).dtype == torch.float32, field
    out.loss.backward()
    trainable = [p for p in bf16.parameters() if p.requires_grad]
    assert trainable and all(p.dtype == torch.float32 and p.grad.dtype == torch.float32 for p in trainable)
    assert all(p.grad is None for p in bf16.teachers()["spa3r.aggregator"].parameters())
    assert out.loss.item() != reference.loss.item()  # the teachers really ran in bf16 ...
    torch.testing.assert_close(out.loss, reference.loss, rtol=2e-2, atol=0)  # ... at bf16 accuracy
    torch.testing.assert_close(out.target_geo, reference.target_geo, rtol=0.05, atol=0.05)


def test_bf16_teachers_do_not_change_a_trained_backbone(images):
    """With train_backbone the aggregator is the student: it stays float32 under teacher_dtype=bfloat16."""
    torch.manual_seed(0)
    model = Spa3RForPretraining(tiny_spa3r_config(train_backbone=True, teacher_dtype="bfloat16")).train()
    dtypes, _ = _output_dtypes(model, images, True)
    assert dtypes["aggregator"] == torch.float32 and dtypes["dinov3"] == torch.bfloat16


def test_teacher_dtype_config_and_pretrain_override(tmp_path):
    with pytest.raises(ValueError, match="teacher_dtype must be 'float32' or 'bfloat16', got 'float16'"):
        tiny_spa3r_config(teacher_dtype="float16")
    path = tmp_path / "config.json"
    tiny_spa3r_config().to_json_file(path)
    model = build_model(ModelArguments(config_name=str(path), teacher_dtype="bfloat16", sampled_depth_target=True))
    assert model.config.teacher_dtype == "bfloat16" and model.config.sampled_depth_target
    assert Spa3RConfig.from_json_file(path).teacher_dtype == "float32"  # the default
