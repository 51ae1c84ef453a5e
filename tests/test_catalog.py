from pathlib import Path

import pytest

from scenarios.catalog import CatalogError, get_gpu, get_model, load_gpus, load_models


@pytest.mark.parametrize(
    "name,params_b",
    [("7b", 6.738), ("13b", 13.016), ("70b", 68.977), ("8b", 8.030), ("llama-3-70b", 70.554)],
)
def test_parameter_counts_match_published_models(name, params_b):
    assert get_model(name).param_count / 1e9 == pytest.approx(params_b, abs=0.001)


def test_shapes_and_aliases():
    m = get_model("70b")
    assert m.name == "llama-2-70b" and m.hf_id == "meta-llama/Llama-2-70b-hf"
    assert (m.num_layers, m.hidden_size, m.num_heads, m.num_kv_heads, m.head_dim) == (80, 8192, 64, 8, 128)
    # K and V, 80 layers, 8 KV heads of 128, bf16
    assert m.kv_bytes_per_token() == 2 * 80 * 8 * 128 * 2
    assert get_model("tiny").head_dim == 64
    assert get_model("LLAMA-3-8B").vocab_size == 128256


def test_gpus():
    h100 = get_gpu("h100")
    assert h100.key == "h100-sxm" and h100.peak_flops == 989e12 and h100.hbm_bandwidth == 3350e9
    assert get_gpu("4090").memory_gib == 24
    assert {g for g in ("a800", "a100-80g", "h100-sxm", "h200", "rtx4090", "rtx3090") if get_gpu(g)}


def test_unknown_names_list_choices():
    with pytest.raises(CatalogError, match="unknown model 'gpt-5'.*7b"):
        get_model("gpt-5")
    with pytest.raises(CatalogError, match="unknown GPU 'tpu'.*h100"):
        get_gpu("tpu")


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "c.yaml"
    p.write_text(text)
    return p


def test_loader_rejects_bad_files(tmp_path):
    with pytest.raises(CatalogError, match="lacks field"):
        load_gpus(_write(tmp_path, "gpus:\n  x:\n    name: X\n"))
    good = ("name: X\n    aliases: []\n    peak_bf16_tflops: 1\n    hbm_bandwidth_gbs: 1\n    memory_gib: 1\n"
            "    interconnect: pcie\n    interconnect_gbs: 1\n")
    with pytest.raises(CatalogError, match="must be positive"):
        load_gpus(_write(tmp_path, "gpus:\n  x:\n    " + good.replace("memory_gib: 1", "memory_gib: -3")))
    with pytest.raises(CatalogError, match="wrong type"):
        load_gpus(_write(tmp_path, "gpus:\n  x:\n    " + good.replace("memory_gib: 1", "memory_gib: lots")))
    with pytest.raises(CatalogError, match="unknown field"):
        load_gpus(_write(tmp_path, "gpus:\n  x:\n    " + good + "    colour: red\n"))
    with pytest.raises(CatalogError, match="quote numbers"):
        load_gpus(_write(tmp_path, "gpus:\n  x:\n    " + good.replace("aliases: []", "aliases: [4090]")))
    with pytest.raises(CatalogError, match="top-level 'models:'"):
        load_models(_write(tmp_path, "- 1\n"))
    assert load_gpus(_write(tmp_path, "gpus:\n  x:\n    " + good))["x"].name == "X"
