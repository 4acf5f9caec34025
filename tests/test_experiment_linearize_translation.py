"""Paper 004's transformer experiment (Fig. 24) at --quick size, and its pieces by hand."""

import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import _linearize_translation as lt
from experiments import linearize


def test_translation_task_maps_tokens_by_one_bijection_and_swaps_pairs():
    src, tgt_in, tgt_out = lt.translation_task(50, seed=3, vocab=12, min_len=3, max_len=6)
    mapping = {}
    for s, ti, to in zip(src, tgt_in, tgt_out, strict=True):
        n = int(np.argmax(s == lt.EOS))  # sentence length
        assert ti[0] == lt.BOS and to[n] == lt.EOS and (s[n + 1 :] == lt.PAD).all()
        np.testing.assert_array_equal(ti[1 : n + 1], to[:n])  # shifted by one
        words, target = s[:n], to[:n].copy()
        even = n - n % 2
        target[:even] = target[:even].reshape(-1, 2)[:, ::-1].reshape(-1)  # undo the swaps
        for a, b in zip(words, target, strict=True):
            assert mapping.setdefault(int(a), int(b)) == b  # one token, one translation
    assert len(set(mapping.values())) == len(mapping)  # and no two tokens share one


class _FixedLogits(nn.Module):
    """Logits that are a parameter of shape (length, vocab), the same for every sentence."""

    @nn.compact
    def __call__(self, src, tgt):
        table = self.param("logits", nn.initializers.normal(1.0), (tgt.shape[1], 5))
        return jnp.broadcast_to(table, (*tgt.shape, 5))


def test_perplexity_is_exp_of_mean_nll_over_non_padding_tokens():
    labels = np.array([[3, 4, 0], [1, 0, 0]])
    data = (np.zeros((2, 2), np.int32), np.zeros((2, 3), np.int32), labels)
    model = _FixedLogits()
    params = model.init(jax.random.key(0), data[0], data[1])["params"]
    z = np.asarray(params["logits"], np.float64)
    logp = z - np.log(np.exp(z).sum(-1, keepdims=True))
    nll = [-logp[0, 3], -logp[1, 4], -logp[0, 1]]  # (row 0: positions 0, 1), (row 1: 0)
    want = np.exp(np.mean(nll))
    np.testing.assert_allclose(lt.perplexity(model, params, data, batch=1), want, rtol=1e-5)


def test_quick_run_linearizes_every_ffn_unit_and_reports_perplexities(tmp_path):
    out = linearize.main(["--arch", "transformer", "--quick", "--out", str(tmp_path)])
    res = json.loads((out / "results.json").read_text())
    cfg, (run,) = res["config"], res["seeds"]
    assert cfg["dataset"] == "translation" and cfg["target"] == 1.0
    assert len(run["relu_perplexity_curve"]) == cfg["epochs"] == 2
    assert [r["t"] for r in run["advantage"]] == [0, 2]
    for row in run["advantage"]:
        # "linearize all PReLU activations": the share reached is the target, every slope is
        # exactly 1 (the encoder's and the decoder's feed-forward, 32 units each)
        assert row["linear_share"] == 1.0
        assert sorted(row["slopes"]) == ["decoder_0/ffn/linear1", "encoder_0/ffn/linear1"]
        assert all(np.array_equal(s, np.ones(32)) for s in row["slopes"].values())
        # a perplexity of the 12-token vocabulary: above 1, below the uniform guess's 12
        assert 1.0 < row["test_perplexity"] < 12.0
    assert "| 2 |" in (out / "table.md").read_text()


def test_transformer_runs_on_the_translation_task_only(capsys):
    with pytest.raises(SystemExit):
        linearize.main(["--quick", "--arch", "transformer", "--dataset", "cifar10"])
    assert "--arch transformer --dataset cifar10" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        linearize.main(["--quick", "--arch", "resnet56", "--dataset", "translation"])
    assert "TFDS has no multi30k" in capsys.readouterr().err
