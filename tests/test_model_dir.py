"""`loadgen make-model`: a serving-ready directory with the catalog's real shapes, built offline."""

import json

import pytest

from backends.errors import BackendError
from backends.model_dir import train_tokenizer, weight_shapes, write_model_dir
from scenarios.catalog import get_model
from tests.conftest import run_loadgen


def test_tokenizer_has_exactly_the_vocabulary_size_and_every_id_prints_text():
    tok, learned = train_tokenizer(2048)
    assert tok.get_vocab_size() == 2048 and learned <= 2048
    specials = {tok.token_to_id(t) for t in ("<unk>", "<s>", "</s>")}
    assert specials == {0, 1, 2}
    # a random-weight model emits any id; each must decode to visible text, or a streaming server sends nothing
    empty = [i for i in range(3, 2048) if not tok.decode([i])]
    assert empty == []


def test_tokenizer_fills_to_sizes_bpe_cannot_learn_from_its_corpus():
    tok, learned = train_tokenizer(600, seed=1)
    assert tok.get_vocab_size() == 600


def test_weight_shapes_count_the_catalog_parameters():
    for name in ("tiny", "7b", "70b", "8b"):
        spec = get_model(name)
        total = sum(int(__import__("math").prod(s)) for s in weight_shapes(spec).values())
        assert total == spec.param_count, name


def test_random_weights_load_in_transformers_and_generate(tmp_path):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    spec = get_model("tiny")
    result = write_model_dir(spec, tmp_path / "m", "random")
    assert result.weight_files == ("model.safetensors",)
    model = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "m")
    tok = transformers.AutoTokenizer.from_pretrained(tmp_path / "m")
    assert sum(p.numel() for p in model.parameters()) == spec.param_count
    assert model.dtype == torch.bfloat16 and model.config.num_key_value_heads == spec.num_kv_heads
    ids = tok("the quick brown fox", return_tensors="pt").input_ids
    out = model.generate(ids, max_new_tokens=6, do_sample=False, min_new_tokens=6)
    assert out.shape[1] == ids.shape[1] + 6
    assert tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True)


def test_sharded_weights_have_an_index(tmp_path, monkeypatch):
    pytest.importorskip("torch")
    import backends.model_dir as md

    monkeypatch.setattr(md, "SHARD_BYTES", 2_000_000)  # tiny is ~4.5 MB in bf16: several shards
    result = write_model_dir(get_model("tiny"), tmp_path / "m", "random")
    assert len(result.weight_files) > 1
    index = json.loads((tmp_path / "m" / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"]) == set(weight_shapes(get_model("tiny")))
    assert set(index["weight_map"].values()) == set(result.weight_files)


def test_force_removes_stale_weights(tmp_path):
    pytest.importorskip("torch")
    write_model_dir(get_model("tiny"), tmp_path / "m", "random")
    with pytest.raises(BackendError, match="not empty"):
        write_model_dir(get_model("tiny"), tmp_path / "m", "none")
    write_model_dir(get_model("tiny"), tmp_path / "m", "none", force=True)
    assert not list((tmp_path / "m").glob("*.safetensors"))


def test_make_model_cli_and_vllm_uses_dummy_weights_for_a_weightless_directory(tmp_path):
    out = tmp_path / "m7b"
    proc = run_loadgen("make-model", "--model", "7b", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    config = json.loads((out / "config.json").read_text())
    assert (config["hidden_size"], config["num_hidden_layers"], config["vocab_size"]) == (4096, 32, 32000)
    dry = run_loadgen("run", "--backend", "vllm", "--model", str(out), "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "--load-format dummy" in dry.stdout and "weights: dummy" in dry.stdout
    # an explicit --load-format is the user's choice
    dry = run_loadgen("run", "--backend", "vllm", "--model", str(out), "--dry-run", "--engine-arg=--load-format=auto")
    assert "--load-format dummy" not in dry.stdout


def test_make_model_user_errors(tmp_path):
    proc = run_loadgen("make-model", "--model", "9b", "--out", str(tmp_path / "x"))
    assert proc.returncode == 2 and "unknown model '9b'" in proc.stderr and "Traceback" not in proc.stderr
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "f").write_text("x")
    proc = run_loadgen("make-model", "--model", "tiny", "--out", str(tmp_path / "full"))
    assert proc.returncode == 2 and "--force" in proc.stderr


def test_engine_path_goes_on_the_launched_pythonpath(tmp_path):
    proc = run_loadgen("run", "--backend", "vllm", "--model", "7b", "--dry-run", "--engine-path", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert f"export PYTHONPATH={tmp_path}" in proc.stdout
    proc = run_loadgen("run", "--backend", "vllm", "--model", "7b", "--dry-run", "--engine-path", str(tmp_path / "no"))
    assert proc.returncode == 2 and "is not a directory" in proc.stderr
