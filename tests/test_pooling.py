"""hubcompress.pooling against sentence-transformers itself: folders saved by its own ``save``,
reloaded by its own loader, and the embeddings its Pooling + Normalize modules compute."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from hubcompress.errors import HubcompressError
from hubcompress.pipeline.tasks import TASKS
from hubcompress.pooling import Pooling, PoolingConfigError

st = pytest.importorskip("sentence_transformers")
try:  # sentence-transformers 6
    from sentence_transformers.sentence_transformer.modules import Dense, Normalize, Transformer
    from sentence_transformers.sentence_transformer.modules import Pooling as StPooling
except ImportError:  # sentence-transformers 5
    from sentence_transformers.models import Dense, Normalize, Transformer
    from sentence_transformers.models import Pooling as StPooling

HIDDEN = 16
MODES = [("cls",), ("mean",), ("max",), ("mean_sqrt_len_tokens",), ("weightedmean",), ("lasttoken",), ("mean", "max")]
# Padded rows: full, right padding, left padding, one token at the end; each has a real token.
MASK = np.array([[1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0], [0, 0, 1, 1, 1, 1], [0, 0, 0, 0, 0, 1]])
LEGACY_CONFIG = {"word_embedding_dimension": HIDDEN, "pooling_mode_cls_token": True, "pooling_mode_mean_tokens": True,
                 "pooling_mode_max_tokens": False, "pooling_mode_mean_sqrt_len_tokens": False}


@pytest.fixture(scope="module")
def tiny_encoder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 1-layer BERT and a word-level tokenizer: what a sentence-transformers Transformer module loads."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    folder = tmp_path_factory.mktemp("tiny-encoder")
    torch.manual_seed(0)
    BertModel(BertConfig(hidden_size=HIDDEN, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                         vocab_size=20, max_position_embeddings=32)).save_pretrained(folder)
    vocab = {word: i for i, word in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "a", "good", "film"])}
    core = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=core, pad_token="[PAD]", unk_token="[UNK]",
                            model_max_length=32).save_pretrained(folder)
    return folder


def st_pooling(modes: tuple[str, ...]) -> torch.nn.Module:
    try:
        return StPooling(HIDDEN, pooling_mode=modes)
    except (AttributeError, AssertionError, TypeError, ValueError):  # sentence-transformers 5: one key per mode
        keys = {"cls": "pooling_mode_cls_token", "max": "pooling_mode_max_tokens", "mean": "pooling_mode_mean_tokens",
                "mean_sqrt_len_tokens": "pooling_mode_mean_sqrt_len_tokens",
                "weightedmean": "pooling_mode_weightedmean_tokens", "lasttoken": "pooling_mode_lasttoken"}
        return StPooling(HIDDEN, **{keys[mode]: True for mode in modes})


def saved_model(encoder: Path, folder: Path, *modules: torch.nn.Module) -> Path:
    """``folder`` as sentence-transformers saves a Transformer followed by ``modules``."""
    st.SentenceTransformer(modules=[Transformer(str(encoder)), *modules], device="cpu").save(str(folder))
    return folder


def reference(folder: Path, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """What sentence-transformers, loading ``folder`` itself, makes of these token vectors."""
    model = st.SentenceTransformer(str(folder), device="cpu")
    features: dict[str, torch.Tensor] = {"token_embeddings": hidden.clone(), "attention_mask": mask.clone()}
    with torch.no_grad():
        for module in list(model.children())[1:]:
            features = module(features)
    return features["sentence_embedding"]


def token_vectors(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((len(MASK), MASK.shape[1], HIDDEN)).astype(np.float32)


@pytest.mark.parametrize("normalize", [False, True], ids=["plain", "normalize"])
@pytest.mark.parametrize("modes", MODES, ids=["+".join(m) for m in MODES])
def test_pooling_matches_sentence_transformers(tiny_encoder: Path, tmp_path: Path, modes: tuple[str, ...],
                                               normalize: bool) -> None:
    folder = saved_model(tiny_encoder, tmp_path / "st", st_pooling(modes), *([Normalize()] if normalize else []))
    pooling = Pooling.from_folder(folder)
    assert pooling == Pooling(modes, normalize=normalize)
    hidden = token_vectors()
    expected = reference(folder, torch.from_numpy(hidden), torch.from_numpy(MASK)).numpy()
    assert expected.shape == (len(MASK), HIDDEN * len(modes))

    from_numpy = pooling(hidden, MASK)
    assert isinstance(from_numpy, np.ndarray) and from_numpy.dtype == np.float32
    np.testing.assert_allclose(from_numpy, expected, atol=1e-6, rtol=0)
    from_torch = pooling(torch.from_numpy(hidden), torch.from_numpy(MASK))
    assert isinstance(from_torch, torch.Tensor) and from_torch.dtype == torch.float32
    np.testing.assert_allclose(from_torch.numpy(), expected, atol=1e-6, rtol=0)
    # The pipeline's rows go through the same object, and float64 ONNX outputs come back as float32.
    rows = np.stack(TASKS["feature-extraction"].rows({"last_hidden_state": hidden.astype(np.float64)},
                                                     {"attention_mask": MASK}, range(len(MASK)), None, pooling))
    assert rows.dtype == np.float32
    np.testing.assert_allclose(rows, expected, atol=1e-6, rtol=0)


@pytest.mark.parametrize("modes", MODES, ids=["+".join(m) for m in MODES])
def test_all_padding_rows_give_zeros_and_gradients_stay_finite(modes: tuple[str, ...]) -> None:
    hidden = torch.from_numpy(token_vectors(1)).requires_grad_(True)
    mask = torch.from_numpy(MASK).clone()
    mask[1] = 0
    pooled = Pooling(modes, normalize=True)(hidden, mask)
    assert torch.isfinite(pooled).all() and not pooled[1].any()
    pooled.pow(2).sum().backward()
    assert hidden.grad is not None and torch.isfinite(hidden.grad).all()
    if modes == ("mean",):  # padding gets no gradient: it takes no part in the embedding
        assert not hidden.grad[torch.from_numpy(MASK) == 0].any()


def test_hand_checked_mean_and_order_of_modes() -> None:
    hidden = np.arange(12, dtype=np.float32).reshape(2, 3, 2)
    mask = np.array([[1, 1, 1], [1, 0, 0]])
    assert Pooling(("mean",), normalize=False)(hidden, mask).tolist() == [[2.0, 3.0], [6.0, 7.0]]
    assert Pooling(("max", "cls"), normalize=False)(hidden, mask).tolist() == [[4.0, 5.0, 0.0, 1.0],
                                                                              [6.0, 7.0, 6.0, 7.0]]
    assert Pooling(("mean",), normalize=False).width(384) == 384 and Pooling(("cls", "max")).width(-1) == -1
    with pytest.raises(PoolingConfigError, match="'sum'"):
        Pooling(("sum",))


def test_legacy_boolean_keys(tiny_encoder: Path, tmp_path: Path) -> None:
    folder = saved_model(tiny_encoder, tmp_path / "st", st_pooling(("mean",)), Normalize())
    (folder / "1_Pooling" / "config.json").write_text(json.dumps(LEGACY_CONFIG))
    pooling = Pooling.from_folder(folder)
    assert pooling == Pooling(("cls", "mean"), normalize=True)  # the old keys' order, not the file's
    hidden = token_vectors(2)
    expected = reference(folder, torch.from_numpy(hidden), torch.from_numpy(MASK)).numpy()
    np.testing.assert_allclose(pooling(hidden, MASK), expected, atol=1e-6, rtol=0)

    (folder / "1_Pooling" / "config.json").write_text(json.dumps({"word_embedding_dimension": HIDDEN}))
    assert Pooling.from_folder(folder).modes == ("mean",)  # no key set: mean, as sentence-transformers reads it


def test_a_plain_transformers_folder_gets_mean_and_normalize(tiny_encoder: Path) -> None:
    assert not (tiny_encoder / "modules.json").exists()
    assert Pooling.from_folder(tiny_encoder) == Pooling(("mean",), normalize=True)
    assert Pooling.from_folder(tiny_encoder).to_dict() == {"modes": ["mean"], "normalize": True, "include_prompt": True}


def test_include_prompt_is_recorded(tiny_encoder: Path, tmp_path: Path) -> None:
    folder = saved_model(tiny_encoder, tmp_path / "st", st_pooling(("mean",)))
    config = json.loads((folder / "1_Pooling" / "config.json").read_text())
    (folder / "1_Pooling" / "config.json").write_text(json.dumps({**config, "include_prompt": False}))
    assert Pooling.from_folder(folder) == Pooling(("mean",), normalize=False, include_prompt=False)


def test_a_dense_module_is_refused_naming_the_file_and_module(tiny_encoder: Path, tmp_path: Path) -> None:
    folder = saved_model(tiny_encoder, tmp_path / "st", st_pooling(("mean",)), Dense(HIDDEN, 8), Normalize())
    with pytest.raises(HubcompressError, match=r"modules\.json: module '2' \(.*Dense\) is not supported yet"):
        Pooling.from_folder(folder)


def test_unreadable_files_are_named(tiny_encoder: Path, tmp_path: Path) -> None:
    folder = saved_model(tiny_encoder, tmp_path / "st", st_pooling(("cls",)))
    config = folder / "1_Pooling" / "config.json"
    config.write_text('{"pooling_mode": "cls",')
    with pytest.raises(PoolingConfigError, match=rf"{config}: cannot read it as JSON"):
        Pooling.from_folder(folder)
    config.write_text('{"pooling_mode": ["cls", "sum"]}')
    with pytest.raises(PoolingConfigError, match=rf"{config}: pooling_mode \['cls', 'sum'\]"):
        Pooling.from_folder(folder)
    config.unlink()
    with pytest.raises(PoolingConfigError, match=rf"{config} does not exist"):
        Pooling.from_folder(folder)
    (folder / "modules.json").write_text("[{")
    with pytest.raises(PoolingConfigError, match=rf"{folder / 'modules.json'}: cannot read it as JSON"):
        Pooling.from_folder(folder)


def test_the_run_reads_the_base_folders_pooling(tiny_encoder: Path, tmp_path: Path) -> None:
    from hubcompress.pipeline import open_run

    from .pipeline.conftest import CLASSIFY, EMBED, make_tiny_run_inputs, write_recipe

    inputs = make_tiny_run_inputs(tmp_path / "inputs")
    base = inputs / "tiny-bert"
    (base / "modules.json").write_text(json.dumps(
        [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
         {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]))
    (base / "1_Pooling").mkdir()
    (base / "1_Pooling" / "config.json").write_text(json.dumps({"embedding_dimension": 32, "pooling_mode": "cls"}))
    embed = open_run(str(base), write_recipe(inputs, EMBED), tmp_path / "embed", progress=False)
    assert embed.pooling == Pooling(("cls",), normalize=False)
    classify = open_run(str(base), write_recipe(inputs, CLASSIFY, "classify.yaml"), tmp_path / "classify",
                        progress=False)
    assert classify.pooling is None  # a classifier's rows are its logits
