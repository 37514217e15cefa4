"""Depth pruning (``pruning.drop_layers``): the recipe schema, the layer surgery per architecture,
block-influence importance, and the compress stage with width pruning and the layerwise distiller."""

from __future__ import annotations

import copy

import pytest
import torch
from transformers import BertConfig, BertModel

from hubcompress.compression.pruning import depth
from hubcompress.errors import ConfigListError, RecipeError
from hubcompress.pipeline.compress import compress_model, needs_training
from hubcompress.pipeline.depth import apply_depth
from hubcompress.recipe import parse_recipe
from tests.conftest import tiny_albert, tiny_gpt2, tiny_modernbert


def _bert(layers: int = 4) -> BertModel:
    torch.manual_seed(0)
    return BertModel(BertConfig(hidden_size=32, num_hidden_layers=layers, num_attention_heads=4,
                                intermediate_size=64, vocab_size=100)).eval()


class _Texts:
    """A stand-in for ``Encoded``: fixed random batches, forever."""

    def __init__(self, rows: int = 16):
        g = torch.Generator().manual_seed(0)
        self.ids = torch.randint(3, 100, (rows, 9), generator=g)
        self.mask = torch.ones_like(self.ids)
        self.mask[::2, 6:] = 0

    def __len__(self) -> int:
        return len(self.ids)

    def train_batches(self, batch_size: int, seed: int, *, with_labels: bool):
        batch_size = min(batch_size, len(self))  # as Encoded does
        while True:
            for start in range(0, len(self) - batch_size + 1, batch_size):
                yield {"input_ids": self.ids[start:start + batch_size],
                       "attention_mask": self.mask[start:start + batch_size]}


RECIPE = "task: feature-extraction\n{data}pruning: {{{pruning}}}\n"


def _recipe(pruning: str, data: bool = False):
    return parse_recipe(RECIPE.format(pruning=pruning, data="data: {dataset: x}\n" if data else ""), "r.yaml")


@pytest.mark.parametrize("value, message", [
    ("true", "not a bool"), ("0", "at least 1"), ("1.0", "between 0 and 1"), ("[1, 1]", "distinct"),
    ("[-1]", "distinct integers >= 0"), ("[]", "distinct")])
def test_schema_rejects_bad_values_at_the_key(value: str, message: str) -> None:
    with pytest.raises(RecipeError, match=rf"r.yaml:2: pruning.drop_layers.*{message}"):
        _recipe(f"drop_layers: {value}")


def test_a_count_needs_data_and_a_list_alone_does_not_train() -> None:
    with pytest.raises(RecipeError, match="drop_layers: a count or fraction"):
        _recipe("drop_layers: 2")
    recipe = _recipe("drop_layers: [1]")  # TaylorPruner is the default pruner, but no width is pruned
    assert not recipe.pruning.prunes_width and not needs_training(recipe)


def test_out_of_range_and_all_layers_name_the_key() -> None:
    with pytest.raises(RecipeError, match=r"pruning.drop_layers: layer indices \[7\] are out of range"):
        apply_depth(_bert(), _recipe("drop_layers: [1, 7]"), None)
    with pytest.raises(RecipeError, match="pruning.drop_layers: dropping layers .* leaves none"):
        apply_depth(_bert(2), _recipe("drop_layers: [0, 1]"), None)
    with pytest.raises(RecipeError, match="pruning.drop_layers: dropping 4 of 4 layers leaves none"):
        apply_depth(_bert(), _recipe("drop_layers: 4", data=True), _Texts())


def test_block_influence_drops_the_layer_that_changes_the_stream_least() -> None:
    model = _bert()
    layer = model.encoder.layer[2]  # its residual branches add zeros: LayerNorm(LayerNorm(x)) ~ x
    for linear in (layer.attention.output.dense, layer.output.dense):
        torch.nn.init.zeros_(linear.weight)
        torch.nn.init.zeros_(linear.bias)
    summary = apply_depth(model, _recipe("drop_layers: 0.25", data=True), _Texts())
    assert summary["dropped"] == [2] and summary["kept"] == [0, 1, 3]
    assert summary["chosen_by"] == "block influence" and min(summary["scores"]) == summary["scores"][2] < 1e-3
    assert model.config.num_hidden_layers == 3 and len(model.encoder.layer) == 3


def test_renumbers_layer_indices_and_keeps_outputs_of_a_stock_model() -> None:
    model = tiny_gpt2()
    depth.drop_layers(model, [0])
    assert model.config.n_layer == 1 and model.transformer.h[0].attn.layer_idx == 0
    ids = torch.randint(3, 100, (1, 5))
    with torch.no_grad():  # generation indexes its KV cache by layer_idx
        model.generate(ids, max_new_tokens=2, do_sample=False, pad_token_id=0)
    bert = _bert()
    reference = copy.deepcopy(bert)
    depth.drop_layers(bert, [1, 3])
    rebuilt = BertModel(bert.config).eval()
    rebuilt.load_state_dict(bert.state_dict())
    batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
    with torch.no_grad():
        assert torch.equal(rebuilt(**batch).last_hidden_state, bert(**batch).last_hidden_state)
        assert not torch.allclose(reference(**batch).last_hidden_state, bert(**batch).last_hidden_state)


def test_architectures_that_cannot_lose_layers_say_why() -> None:
    with pytest.raises(ConfigListError, match="one module per layer"):
        depth.drop_layers(tiny_albert(), [1])  # one shared layer, applied twice
    with pytest.raises(ConfigListError, match="keep layer 0"):
        depth.drop_layers(tiny_modernbert(), [0])
    model = tiny_modernbert()
    depth.drop_layers(model, [1])
    assert model.config.layer_types == ["full_attention"]


def test_mixed_compression_trains_the_kept_layers_against_the_teacher_layers_they_replace() -> None:
    model = _bert()
    teacher = copy.deepcopy(model).requires_grad_(False)
    recipe = parse_recipe("task: feature-extraction\ndata: {dataset: x}\n"
                          "pruning: {pruner: L1NormPruner, heads: 0.5, ffn: 0.5, drop_layers: [0, 2]}\n"
                          "distillation: {distiller: DynamicLayerwiseDistiller}\ntraining: {steps: 2, batch_size: 4}\n")
    result = compress_model(model, teacher, recipe, _Texts(), progress=False)
    assert result.depth["kept"] == [1, 3] and result.summary()["depth"]["dropped"] == [0, 2]
    assert result.steps == 2 and result.loss_last is not None
    assert sorted({name.split(".")[2] for name in result.masks}) == ["0", "1"]  # renumbered layers
    assert model.config.num_hidden_layers == 2 and teacher.config.num_hidden_layers == 4
    # half the heads of each kept layer are zero
    assert int((model.encoder.layer[1].attention.self.query.weight.abs().sum(1) == 0).sum()) == 16


def test_recipe_check_builds_the_config_list_on_the_layers_run_keeps(tmp_path) -> None:
    from hubcompress.pipeline.check import check_recipe

    folder = tmp_path / "model"
    BertModel(BertConfig(hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=64,
                         vocab_size=50)).save_pretrained(folder)
    listed = "    - {sparse_ratio: 0.5, op_names: [encoder.layer.%d.intermediate.dense]}\n"

    def check(drop: str, layer: int):
        recipe = tmp_path / "r.yaml"
        recipe.write_text(f"task: feature-extraction\ndata: {{dataset: bbcnews}}\n"
                          f"pruning:\n  pruner: L1NormPruner\n  drop_layers: {drop}\n  config_list:\n" + listed % layer)
        return check_recipe(recipe, str(folder))

    # After dropping one of three layers the kept ones are encoder.layer.0 and .1, whichever went.
    assert check("[0]", 1).built[0] == "L1NormPruner on 1 modules"
    assert check("1", 1).built[0] == "L1NormPruner on 1 modules"
    with pytest.raises(RecipeError, match=r"encoder\.layer\.2"):
        check("1", 2)
    with pytest.raises(RecipeError, match="drop_layers"):
        check("[5]", 0)


def _links_after_drop(distillation: str) -> dict[str, list[str]]:
    from hubcompress import compression
    from hubcompress.pipeline.compress import build_chain

    model = _bert()
    teacher = copy.deepcopy(model).requires_grad_(False)
    recipe = parse_recipe("task: feature-extraction\ndata: {dataset: x}\npruning: {drop_layers: [0, 2]}\n"
                          f"distillation:\n  distiller: DynamicLayerwiseDistiller\n{distillation}", "r.yaml")
    summary = apply_depth(model, recipe, None)
    evaluator = compression.TorchEvaluator(lambda *a, **k: None, torch.optim.SGD(model.parameters(), lr=0.1),
                                           lambda batch, m: m(**batch))
    distiller = build_chain(model, teacher, recipe, evaluator, total=2, depth=summary)["distiller"]
    return {f"{link.space.wrapper.module_name}:{link.space.name}": [name for name, _ in link.teachers]
            for link in distiller._links}


def test_targets_without_a_link_read_the_teacher_modules_the_kept_layers_replace() -> None:
    # 4 layers, 0 and 2 dropped: student layer 0 is original layer 1 and stands in for layers 1-2,
    # student layer 1 is original layer 3 (the last).
    assert _links_after_drop("") == {"encoder.layer.0:_output_": ["encoder.layer.2"],
                                     "encoder.layer.1:_output_": ["encoder.layer.3"]}
    written = ("  config_list:\n"
               "    - {op_names: [encoder.layer.0, encoder.layer.1.attention.output.dense]}\n"
               "    - {op_names: [pooler.dense], link: encoder.layer.3.output.dense}\n")
    assert _links_after_drop(written) == {
        "encoder.layer.0:_output_": ["encoder.layer.2"],
        "encoder.layer.1.attention.output.dense:_output_": ["encoder.layer.3.attention.output.dense"],
        "pooler.dense:_output_": ["encoder.layer.3.output.dense"]}


def test_recipe_check_lets_a_link_name_a_layer_the_student_dropped(tmp_path) -> None:
    from hubcompress.pipeline.check import check_recipe

    folder = tmp_path / "model"
    BertModel(BertConfig(hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=64,
                         vocab_size=50)).save_pretrained(folder)
    recipe = tmp_path / "r.yaml"
    recipe.write_text("task: feature-extraction\ndata: {dataset: bbcnews}\npruning: {drop_layers: [1, 2]}\n"
                      "distillation:\n  distiller: DynamicLayerwiseDistiller\n  config_list:\n"
                      "    - {op_names: [encoder.layer.0], link: encoder.layer.2}\n")
    assert "DynamicLayerwiseDistiller on 1 modules" in check_recipe(recipe, str(folder)).built
