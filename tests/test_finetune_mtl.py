"""Regularized multitask fine-tuning (Kulkarni et al., TMLR 2024): masking, heads, eq. 9, end to end."""

import copy
import math
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("transformers")

from feature_extraction import load_backbone  # noqa: E402
from feature_extraction._testing import make_tiny_bert, make_tiny_vision, random_images, random_sentences  # noqa: E402
from skgroup import JTTClassifier  # noqa: E402
from skgroup.objectives import MultitaskLoss  # noqa: E402
from skgroup.finetune import FineTuneClassifier, MaskedImageModeling, MaskedLM, load_finetuned  # noqa: E402
from skgroup.finetune._auxiliary import AuxBatch, AuxiliaryCollate, mask_patches, mask_tokens  # noqa: E402
from skgroup.finetune._model import trainable_backbone  # noqa: E402
from skgroup.finetune._mtl_model import (  # noqa: E402
    MultitaskBackboneClassifier,
    image_parts,
    make_auxiliary_head,
)


def _tiny_bert(folder, mlm_head=False):
    """make_tiny_bert, optionally saved with BERT's MLM head."""
    from transformers import BertForMaskedLM, BertModel

    folder = make_tiny_bert(folder)
    if mlm_head:
        torch.manual_seed(1)
        mlm = BertForMaskedLM(BertModel.from_pretrained(folder).config)
        mlm.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def bert(tmp_path_factory):
    return _tiny_bert(tmp_path_factory.mktemp("bert") / "bert")


@pytest.fixture(scope="module")
def bert_mlm(tmp_path_factory):
    return _tiny_bert(tmp_path_factory.mktemp("bertmlm") / "bert", mlm_head=True)


def _labels(texts):
    return np.array([int(any(w in t.split() for w in ("no", "not", "never"))) for t in texts])


def _mtl_module(backbone, task, sample="the cat sat"):
    """A text multitask module (2 classes) whose head reads what ``backbone`` gives for ``sample``."""
    bb = trainable_backbone(backbone)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        head = make_auxiliary_head(task, bb, seed=0)
    with torch.no_grad():
        n_features = bb(bb.collate([bb.prepare(sample)])).shape[1]
    return MultitaskBackboneClassifier(bb, n_features, 2, head)


def _no_dropout(module):
    for m in module.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
    return module


# -- masking ----------------------------------------------------------------------


def test_token_masking_statistics_and_specials(bert):
    backbone = load_backbone(str(bert))
    collate = AuxiliaryCollate(backbone, MaskedLM())
    enc = backbone.collate(random_sentences(400, seed=3, min_words=8, max_words=30))["single"]
    rngs = [np.random.default_rng([7, r]) for r in range(400)]
    ids, labels = mask_tokens(enc["input_ids"], enc["attention_mask"], rngs, special_ids=collate.special_ids,
                              mask_id=collate.mask_id, random_ids=collate.random_ids)
    orig = enc["input_ids"]
    special = torch.isin(orig, torch.tensor(collate.special_ids)) | (enc["attention_mask"] == 0)
    selected = labels != -100
    assert not (selected & special).any()  # [CLS], [SEP], padding: never selected
    assert torch.equal(ids[~selected], orig[~selected]) and torch.equal(labels[selected], orig[selected])
    n = int((~special).sum())
    assert n > 5000
    rate = selected.sum().item() / n
    assert abs(rate - 0.15) < 3 * math.sqrt(0.15 * 0.85 / n)
    k = selected.sum().item()
    to_mask = (ids[selected] == collate.mask_id).float().mean().item()
    unchanged = (ids[selected] == orig[selected]).float().mean().item()
    changed = ((ids[selected] != orig[selected]) & (ids[selected] != collate.mask_id))
    tol = 3 * math.sqrt(0.1 * 0.9 / k)
    assert abs(to_mask - 0.8) < 3 * math.sqrt(0.16 / k) and abs(unchanged - 0.1) < tol + 0.01
    assert abs(changed.float().mean().item() - 0.1) < tol
    assert not torch.isin(ids[selected][changed], torch.tensor(collate.special_ids)).any()
    # a row's masks depend on its generator only, not on the padding its batch needs
    alone = backbone.collate([random_sentences(400, seed=3, min_words=8, max_words=30)[5]])["single"]
    ids1, lab1 = mask_tokens(alone["input_ids"], alone["attention_mask"], [np.random.default_rng([7, 5])],
                             special_ids=collate.special_ids, mask_id=collate.mask_id, random_ids=collate.random_ids)
    length = alone["input_ids"].shape[1]
    assert torch.equal(ids1[0], ids[5, :length]) and torch.equal(lab1[0], labels[5, :length])


def test_patch_mask_ratio_and_cells():
    m = mask_patches(np.random.default_rng(0), 64, 32, 16, 0.6)
    cells = m[::16, ::16]
    assert m.shape == (64, 32) and cells.sum() == math.ceil(0.6 * 8)
    np.testing.assert_array_equal(m, cells.repeat(16, 0).repeat(16, 1))  # whole cells only


# -- heads ------------------------------------------------------------------------


def test_mlm_loss_is_on_selected_positions_only_and_decoder_is_the_embedding(bert):
    backbone = load_backbone(str(bert))
    module = _no_dropout(_mtl_module(backbone, MaskedLM()))
    head, body = module.aux_head, module.body
    assert head.decoder.weight is body.get_input_embeddings().weight  # tied: one tensor
    twin = copy.deepcopy(module)
    assert twin.aux_head.decoder.weight is twin.body.get_input_embeddings().weight
    # "the last layer" of the methods (the last nn.Linear) is the end head, not the MLM decoder
    for m in (module, twin):
        assert [x for x in m.modules() if isinstance(x, torch.nn.Linear)][-1] is m.head
    assert twin.aux_head.decoder.weight is not head.decoder.weight

    enc = backbone.collate(["the cat sat on the mat", "a dog ran"])["single"]
    labels = torch.full_like(enc["input_ids"], -100)
    labels[0, 2], labels[1, 1] = enc["input_ids"][0, 2], enc["input_ids"][1, 1]
    _, loss = head.loss(module.backbone, {"single": enc}, {"single": labels})
    hidden = body(**enc).last_hidden_state
    logits = head(hidden)  # every position; the loss must read the two selected ones only
    by_hand = (F.cross_entropy(logits[0, 2][None], labels[0, 2][None])
               + F.cross_entropy(logits[1, 1][None], labels[1, 1][None])) / 2
    torch.testing.assert_close(loss, by_hand)
    # the gradient reaches the embedding matrix through the tied decoder too
    loss.backward()
    assert body.get_input_embeddings().weight.grad.abs().sum() > 0


def test_siamese_pairs_mask_both_texts_and_h_aux_is_the_pair_representation(bert):
    backbone = load_backbone(str(bert), pair_mode="siamese")
    module = _no_dropout(_mtl_module(backbone, MaskedLM(), sample=("a cat", "a dog")))
    pairs = list(zip(random_sentences(4, seed=8, min_words=8), random_sentences(4, seed=9, min_words=8)))
    batch = AuxiliaryCollate(backbone, MaskedLM(mask_prob=0.5))(
        [(backbone.prepare(p), backbone.prepare(p), i) for i, p in enumerate(pairs)])
    assert set(batch.target) == {"a", "b"} and all((t != -100).any() for t in batch.target.values())
    module.train()
    out = module(batch)
    assert out.h_aux.shape == out.h_end.shape == (4, 4 * 32) and torch.isfinite(out.aux_loss)


def test_checkpoint_mlm_head_is_used_and_a_missing_one_warns(bert, bert_mlm):
    from safetensors.torch import load_file

    state = load_file(str(bert_mlm / "model.safetensors"))
    bb = trainable_backbone(load_backbone(str(bert_mlm)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no 'starts untrained' warning
        head = make_auxiliary_head(MaskedLM(), bb)
    torch.testing.assert_close(head.dense.weight, state["cls.predictions.transform.dense.weight"])
    torch.testing.assert_close(head.bias, state["cls.predictions.bias"])
    with pytest.warns(UserWarning, match="starts untrained"):
        make_auxiliary_head(MaskedLM(), trainable_backbone(load_backbone(str(bert))))
    with pytest.raises(ValueError, match="head='auto'"):
        make_auxiliary_head(MaskedLM(head="checkpoint"), trainable_backbone(load_backbone(str(bert))))


@pytest.fixture(scope="module")
def vision(tmp_path_factory):
    root = tmp_path_factory.mktemp("vision")
    return {k: make_tiny_vision(root / k, k) for k in ("vit", "resnet", "convnext")}


def _vision_backbone(vision, kind):
    if kind == "lite0":
        pytest.importorskip("efficientnet_lite_pytorch")
        return load_backbone("efficientnet-lite0", weights="random", image_size=32, resize=32)
    return load_backbone(str(vision[kind]), image_size=32, resize=32)


@pytest.mark.parametrize("kind", ["vit", "resnet", "convnext", "lite0"])
def test_image_parts_pool_what_the_classifier_reads(vision, kind):
    backbone = _vision_backbone(vision, kind)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        pooled, fmap = image_parts(backbone.module, x)
        torch.testing.assert_close(pooled, backbone(x))
    assert fmap.ndim == 4 and fmap.shape[-1] == (1 if kind == "lite0" else 4)  # Lite0's stride is 32


@pytest.mark.parametrize("kind", ["vit", "resnet", "lite0"])
def test_simmim_loss_is_on_masked_pixels_only(vision, kind):
    bb = trainable_backbone(_vision_backbone(vision, kind))
    with torch.no_grad():
        _, fmap = image_parts(bb.module, torch.zeros(2, 3, 32, 32))  # 2 rows: Lite0's batch norm on a 1 x 1 map
    head = make_auxiliary_head(MaskedImageModeling(mask_patch_size=16), bb,
                               geometry=(fmap.shape[1], fmap.shape[2], 32, 32))
    assert head.stride * fmap.shape[2] == 32  # the decoder's pixel shuffle restores the input size
    if kind == "vit":
        with torch.no_grad():
            head.mask_token.normal_()
    _no_dropout(bb.module)
    if kind == "lite0":
        bb.module.eval()  # its blocks drop connections at random in training mode (a function, not a module)
    x = torch.randn(3, 3, 32, 32)
    mask = torch.from_numpy(np.stack([mask_patches(np.random.default_rng(i), 32, 32, 16, 0.5) for i in range(3)]))
    xin = head.masked_input(x, mask)
    m = mask[:, None].expand_as(x)
    assert torch.equal(xin[~m], x[~m])  # visible pixels untouched
    if kind == "vit":  # masked pixels: the learned token, tiled per ViT patch
        tiled = head.mask_token.repeat(1, 4, 4)[None].expand_as(x)
        assert torch.equal(xin[m], tiled[m])
    else:
        assert (xin[m] == 0).all()
    _, loss = head.loss(bb, x, mask)
    rec = head.decoder(image_parts(bb.module, xin)[1])
    by_hand = (rec - x).abs()[m].mean()
    torch.testing.assert_close(loss, by_hand)
    # reconstruction errors on visible pixels do not count: a decoder output changed only there leaves L_aux
    head.decoder = _Shifted(head.decoder, 100.0 * (~m).float())
    torch.testing.assert_close(head.loss(bb, x, mask)[1], by_hand)
    head.decoder.shift = 100.0 * m.float()
    assert head.loss(bb, x, mask)[1] > by_hand + 50


class _Shifted(torch.nn.Module):
    def __init__(self, decoder, shift):
        super().__init__()
        self.decoder, self.shift = decoder, shift

    def forward(self, f):
        return self.decoder(f) + self.shift


def test_eq9_total_is_end_plus_weighted_aux_plus_l1_by_hand(bert):
    backbone = load_backbone(str(bert))
    module = _no_dropout(_mtl_module(backbone, MaskedLM()))
    with torch.no_grad():
        module.head.weight.normal_()
    texts = random_sentences(6, seed=1)
    collate = AuxiliaryCollate(backbone, MaskedLM(mask_prob=0.5))
    items = [(backbone.prepare(t), backbone.prepare(texts[(i + 2) % 6]), i) for i, t in enumerate(texts)]
    batch = collate(items)
    assert isinstance(batch, AuxBatch) and (batch.target["single"] != -100).any()
    y = torch.tensor([0, 1, 0, 1, 1, 0])
    a_aux, a_reg = math.exp(1), math.exp(-1)
    objective = MultitaskLoss(a_aux, a_reg)
    module.train()
    total = objective(module(batch), y, torch.arange(6))
    h_end = module.features(batch.end)
    h_aux, aux = module.aux_head.loss(module.backbone, batch.aux, batch.target)
    end = F.cross_entropy(module.head(h_end), y)
    by_hand = end + a_aux * aux + a_reg * (h_end.abs().sum() / h_end.numel() + h_aux.abs().sum() / h_aux.numel())
    torch.testing.assert_close(total, by_hand)
    torch.testing.assert_close(objective.last_terms[1], aux.detach())
    module.eval()
    assert isinstance(module(batch.end), torch.Tensor)  # eval mode: the logits alone


# -- end to end ---------------------------------------------------------------------


def _params(ft):
    return torch.cat([p.detach().reshape(-1) for p in ft.model_.parameters()])


def test_text_fit_is_deterministic_and_saves_a_plain_backbone(bert, tmp_path):
    X = random_sentences(64, seed=2)
    y = _labels(X)
    kw = dict(auxiliary=MaskedLM(alpha_aux=1.0, alpha_reg=math.exp(-1)), max_iter=2, batch_size=16,
              learning_rate=1e-3, random_state=3)
    with pytest.warns(UserWarning, match="starts untrained"):
        a = FineTuneClassifier(str(bert), **kw).fit(X, y)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        b = FineTuneClassifier(str(bert), **kw).fit(X, y)
        c = FineTuneClassifier(str(bert), **{**kw, "random_state": 4}).fit(X, y)
    assert torch.equal(_params(a), _params(b)) and not torch.equal(_params(a), _params(c))
    for key in ("end_loss", "aux_loss", "l1"):
        assert np.isfinite(a.history_[key]).all()
    assert a.history_["aux_loss"][0] > 1.0  # cross-entropy over a 140-token vocabulary
    proba = a.predict_proba(X[:4])
    folder = a.save(tmp_path / "saved")
    backbone, W, bias, classes = load_finetuned(folder)
    with torch.no_grad():
        z = backbone(backbone.batch_to(backbone.collate([backbone.prepare(t) for t in X[:4]]), "cpu"))
    np.testing.assert_allclose(torch.softmax(z @ W.T + bias, 1).numpy(), proba, atol=1e-5)
    # nested parameters: a search can tune the weights of eq. 9
    a.set_params(auxiliary__alpha_reg=1.0)
    assert a.auxiliary.alpha_reg == 1.0


def test_jtt_with_mlm_trains_both_stages_with_the_auxiliary_task(bert):
    X = random_sentences(64, seed=4)
    y = _labels(X)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ft = FineTuneClassifier(str(bert), method=JTTClassifier(id_epochs=1, lambda_up=3), auxiliary="mlm",
                                max_iter=2, batch_size=16, learning_rate=1e-3, random_state=0)
        ft.fit(X[:48], y[:48], X_val=X[48:], y_val=y[48:])
    assert ft.method_.error_set_.shape == (48,)
    assert np.isfinite(ft.history_["aux_loss"]).all() and "val_accuracy" in ft.history_
    assert isinstance(ft.model_, MultitaskBackboneClassifier)


def test_image_fit_with_mim_end_to_end(vision, tmp_path):
    images = random_images(32, size=(32, 32), seed=1)
    y = np.arange(32) % 2
    ft = FineTuneClassifier(str(vision["vit"]), backbone_options={"image_size": 32, "resize": 32},
                            auxiliary=MaskedImageModeling(mask_patch_size=8), max_iter=2, batch_size=8,
                            learning_rate=1e-3, random_state=0).fit(images, y)
    assert ft.model_.aux_head.mask_token.abs().sum() > 0  # the mask token trained
    assert np.isfinite(ft.history_["aux_loss"]).all()
    proba = ft.predict_proba(images[:3])
    folder = ft.save(tmp_path / "vit")
    backbone, W, bias, _ = load_finetuned(folder, image_size=32, resize=32)
    with torch.no_grad():
        z = backbone(backbone.batch_to(backbone.collate([backbone.prepare(img) for img in
                                                         _pil(images[:3])]), "cpu"))
    np.testing.assert_allclose(torch.softmax(z @ W.T + bias, 1).numpy(), proba, atol=1e-5)


def _pil(images):
    from PIL import Image

    return [Image.fromarray(img) for img in images]


def test_efficientnet_lite_fits_with_mim():
    # EfficientNet-Lite is no transformers model: its feature map is extract_features, its pooled features the mean
    from skgroup.engine import Callback

    first = []  # the fit copies its callbacks: this list is shared by the copies

    class FirstDecoder(Callback):
        def on_train_begin(self, trainer):
            first.append(trainer.module.aux_head.decoder[0].weight.detach().clone())

    images = random_images(16, size=(32, 32), seed=4)
    ft = FineTuneClassifier(_vision_backbone(None, "lite0"), auxiliary=MaskedImageModeling(mask_patch_size=16),
                            max_iter=1, batch_size=8, learning_rate=1e-3, augment=False, early_stopping=False,
                            callbacks=[FirstDecoder()], random_state=0).fit(images, np.arange(16) % 2)
    assert ft.model_.aux_head.stride == 32  # a 1 x 1 map of a 32-pixel input, shuffled back to 32 x 32
    assert np.isfinite(ft.history_["aux_loss"]).all() and ft.history_["aux_loss"][0] > 0
    assert not torch.equal(ft.model_.aux_head.decoder[0].weight, first[0])  # the reconstruction loss trains it


def test_l1_only_ablation_without_an_auxiliary_head(vision):
    images = random_images(16, size=(32, 32), seed=2)
    ft = FineTuneClassifier(str(vision["resnet"]), backbone_options={"image_size": 32, "resize": 32},
                            auxiliary=MaskedImageModeling(alpha_aux=0.0, alpha_reg=1.0), max_iter=1, batch_size=8,
                            learning_rate=1e-3, random_state=0).fit(images, np.arange(16) % 2)
    assert ft.model_.aux_head is None and ft.history_["aux_loss"][0] == 0 and ft.history_["l1"][0] > 0


def test_group_dro_with_mim_keeps_its_history(vision):
    # Group DRO's history callback reads q and the batch statistics through the MultitaskLoss wrapper
    from skgroup import GroupDROClassifier

    images = random_images(16, size=(32, 32), seed=3)
    y = np.arange(16) % 2
    g = (np.arange(16) // 2) % 2 * 2 + y
    ft = FineTuneClassifier(str(vision["convnext"]), backbone_options={"image_size": 32, "resize": 32},
                            method=GroupDROClassifier(record_history=True),
                            auxiliary=MaskedImageModeling(mask_patch_size=16), max_iter=1, batch_size=8,
                            learning_rate=1e-3, random_state=0).fit(images, y, group_labels=g)
    assert len(ft.history_["q"][0]) == 4 and np.isfinite(ft.history_["aux_loss"]).all()


def test_bad_auxiliary_arguments_name_the_fix(bert, vision):
    images = random_images(8, size=(32, 32))
    y = np.arange(8) % 2
    with pytest.raises(ValueError, match="auxiliary='mim'"):
        FineTuneClassifier(str(vision["resnet"]), auxiliary="mlm").fit(images, y)
    with pytest.raises(ValueError, match="auxiliary='mlm'"):
        FineTuneClassifier(str(bert), auxiliary=MaskedImageModeling()).fit(["a b", "c d"], [0, 1])
    with pytest.raises(ValueError, match=r"mask_patch_size=7\) must divide .* pass mask_patch_size=8"):
        FineTuneClassifier(str(vision["resnet"]), backbone_options={"image_size": 24, "resize": 24},
                           auxiliary=MaskedImageModeling(mask_patch_size=7), max_iter=1).fit(images, y)
    with pytest.raises(ValueError, match="multiple of the ViT's patch size"):
        FineTuneClassifier(str(vision["vit"]), backbone_options={"image_size": 32, "resize": 32},
                           auxiliary=MaskedImageModeling(mask_patch_size=4), max_iter=1).fit(images, y)
    with pytest.raises(ValueError, match="mask_replace"):
        FineTuneClassifier(str(bert), auxiliary=MaskedLM(mask_replace=0.95, random_replace=0.1)).fit(
            ["a b", "c d"], [0, 1])
    with pytest.raises(ValueError, match="auxiliary must be"):
        FineTuneClassifier(str(bert), auxiliary="mask").fit(["a b", "c d"], [0, 1])


def test_cli_auxiliary_table(bert, tmp_path):
    import json
    import textwrap

    from skgroup.finetune._cli import ConfigError, make_auxiliary
    from skgroup.finetune._cli import main as cli_main

    aux = make_auxiliary({"task": "mlm", "alpha_aux": "e^0", "alpha_reg": "e^-1", "mask_prob": 0.2})
    assert aux.alpha_aux == 1.0 and aux.alpha_reg == pytest.approx(math.exp(-1)) and aux.mask_prob == 0.2
    with pytest.raises(ConfigError, match="task = 'mlm'"):
        make_auxiliary({"alpha_aux": 1.0})
    with pytest.raises(ConfigError, match=r"\[auxiliary\]"):
        make_auxiliary({"task": "mim", "mask_prob": 0.2})
    with pytest.raises(ConfigError, match="e\\^K"):
        make_auxiliary({"task": "mlm", "alpha_reg": "big"})
    texts = random_sentences(60, seed=6)
    y, neg = _labels(texts), np.array([int("the" in t.split()) for t in texts])
    split = ["train"] * 30 + ["val"] * 15 + ["test"] * 15
    rows = "".join(f"{t}\t{lab}\t{n}\t{s}\n" for t, lab, n, s in zip(texts, y, neg, split))
    (tmp_path / "data.tsv").write_text("text\tlabel\tneg\tsplit\n" + rows)
    cfg = tmp_path / "run.toml"
    cfg.write_text(textwrap.dedent(f"""
        [model]
        backbone = "{bert}"
        [data]
        path = "{tmp_path / 'data.tsv'}"
        [data.options]
        text_columns = ["text"]
        attribute_columns = ["neg"]
        split_column = "split"
        spurious_attribute = "neg"
        [training]
        max_iter = 1
        batch_size = 10
        learning_rate = 1e-3
        [auxiliary]
        task = "mlm"
        alpha_reg = "e^-1"
    """))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert cli_main([str(cfg), "--output", str(tmp_path / "out"), "--quiet"]) == 0
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["auxiliary"]["task"] == "MaskedLM"
    log = [json.loads(line) for line in (tmp_path / "out" / "log.jsonl").read_text().splitlines()]
    assert "aux_loss" in log[0] and "l1" in log[0]


class _Interrupted(Exception):
    pass


def test_interrupted_multitask_run_resumes_bit_for_bit(bert, tmp_path):
    # the auxiliary head, the masks of epoch 2 and dropout all continue from the checkpoint
    from skgroup.engine import Callback, Checkpoint

    class StopAfterFirstEpoch(Callback):
        def on_epoch_end(self, trainer):
            if trainer.epoch == 1:
                raise _Interrupted
            return False

    epochs_run = []  # the callbacks are copied per fit; the list is shared

    class CountEpochs(Callback):
        def on_epoch_begin(self, trainer):
            epochs_run.append(trainer.epoch)

    X = random_sentences(48, seed=10)
    y = _labels(X)
    kw = dict(auxiliary=MaskedLM(), max_iter=2, batch_size=16, learning_rate=1e-3, random_state=5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        whole = FineTuneClassifier(str(bert), **kw).fit(X, y)
        with pytest.raises(_Interrupted):
            FineTuneClassifier(str(bert), callbacks=[Checkpoint(tmp_path), StopAfterFirstEpoch()], **kw).fit(X, y)
        resumed = FineTuneClassifier(str(bert), callbacks=[Checkpoint(tmp_path), CountEpochs()], **kw).fit(X, y)
    assert epochs_run == [2]  # the resumed run trained the second epoch only (epoch counts from 1 there)
    assert torch.equal(_params(whole), _params(resumed))
    np.testing.assert_array_equal(whole.history_["aux_loss"], resumed.history_["aux_loss"])
