import torch
from transformers import Qwen2_5_VLForConditionalGeneration

from modeling_spa3r.small_models import QWEN_SPECIAL_TOKENS, build_tokenizer, small_qwen_config

TEXTS = ["How many chair(s) are in this room?", "What is the size of this room (in square meters)?"] * 20


def test_trained_tokenizer_round_trips_and_learns_merges():
    bytes_only = build_tokenizer()
    trained = build_tokenizer(TEXTS, vocab_size=320)
    text = "How many chair(s) are in this room? 3.5"
    assert trained.decode(trained(text)["input_ids"]) == text
    assert len(trained(text)["input_ids"]) < len(bytes_only(text)["input_ids"])
    assert all(trained.convert_tokens_to_ids(t) != trained.unk_token_id for t in QWEN_SPECIAL_TOKENS[1:])


def test_chat_template_marks_only_the_answer_for_the_loss():
    tokenizer = build_tokenizer(TEXTS, vocab_size=320)
    messages = [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "How many chairs?"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "3"}]},
    ]
    out = tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
    answer = [i for i, m in zip(out["input_ids"], out["assistant_masks"]) if m]
    assert tokenizer.decode(answer) == "3<|im_end|>"
    assert "<|vision_start|><|image_pad|><|vision_end|>How many chairs?" in tokenizer.decode(out["input_ids"])


def test_small_qwen_config_builds_a_working_model():
    tokenizer = build_tokenizer()
    config = small_qwen_config(tokenizer, hidden_size=64, num_heads=4)
    assert sum(config.text_config.rope_parameters["mrope_section"]) == 64 // 4 // 2
    model = Qwen2_5_VLForConditionalGeneration(config).eval()
    ids = tokenizer("How many chairs?", return_tensors="pt")["input_ids"]
    with torch.no_grad():
        logits = model(input_ids=ids).logits
    assert logits.shape == (1, ids.shape[1], len(tokenizer))
    assert model.lm_head.weight.data_ptr() == model.model.language_model.embed_tokens.weight.data_ptr()
