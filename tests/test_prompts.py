import numpy as np
import pytest

from loadgen.errors import LoadgenError
from loadgen.workload.distributions import LengthDistribution
from loadgen.workload.prompts import WORDS, HFTokenizer, PromptSynthesizer
from loadgen.workload.specs import Workload

tokenizers = pytest.importorskip("tokenizers")


@pytest.fixture(scope="module")
def tokenizer_file(tmp_path_factory):
    """A byte-level BPE tokenizer trained here on synthetic text: no downloads."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=600, special_tokens=["<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    rng = np.random.default_rng(0)
    corpus = [" ".join(rng.choice(WORDS, 30)) + " zebra quokka 12345" for _ in range(300)]
    tok.train_from_iterator(corpus, trainer)
    path = tmp_path_factory.mktemp("tok") / "tokenizer.json"
    tok.save(str(path))
    return path


@pytest.mark.parametrize("n", [1, 7, 64, 500])
def test_exact_lengths_with_a_tokenizer(tokenizer_file, n):
    tok = HFTokenizer(str(tokenizer_file.parent))
    synth = PromptSynthesizer(tok)
    rng = np.random.default_rng(n)
    for _ in range(5):
        text, count = synth.make(rng, n)
        assert count == n and tok.count(text) == n
    assert "exact" in synth.source


def test_approximation_is_one_word_per_token_and_labelled():
    synth = PromptSynthesizer()
    text, count = synth.make(np.random.default_rng(0), 100)
    assert count == 100 and len(text.split()) == 100
    assert "approximation" in synth.source


def test_workload_clips_to_context_and_is_reproducible():
    w = Workload(LengthDistribution.parse("3000"), LengthDistribution.parse("2000"), 4096, seed=3)
    specs = w.take(4)
    assert all(s.input_tokens == 2096 and s.output_tokens == 2000 for s in specs) and w.clipped == 4
    again = Workload(LengthDistribution.parse("3000"), LengthDistribution.parse("2000"), 4096, seed=3).take(4)
    assert [s.prompt for s in specs] == [s.prompt for s in again]


def test_missing_tokenizer_is_a_user_error(tmp_path):
    with pytest.raises(LoadgenError, match="no such file"):
        HFTokenizer(str(tmp_path / "nope"))
    bad = tmp_path / "tokenizer.json"
    bad.write_text("{not json")
    with pytest.raises(LoadgenError, match="cannot load"):
        HFTokenizer(str(bad))


def test_a_prompt_stream_keeps_the_lengths_and_changes_the_text():
    """A sweep's points: the same request sizes at every load, never the same prompts (a prefix cache would
    answer a repeated prompt without prefilling it)."""
    def specs(stream):
        return Workload(LengthDistribution.parse("uniform:20,60"), LengthDistribution.parse("8"), 4096, seed=7,
                        prefix_groups=2, prefix_len=16, stream=stream).take(6)

    first, again, second = specs(0), specs(0), specs(1)
    assert [s.prompt for s in first] == [s.prompt for s in again]
    assert [(s.input_tokens, s.output_tokens) for s in first] == [(s.input_tokens, s.output_tokens) for s in second]
    assert not {s.prompt for s in first} & {s.prompt for s in second}
    # stream 0 is the seed's own text, as before streams existed
    plain = Workload(LengthDistribution.parse("30"), LengthDistribution.parse("8"), 4096, seed=7).take(1)[0]
    assert plain.prompt == PromptSynthesizer().make(np.random.default_rng([7, 2]), 30)[0]
