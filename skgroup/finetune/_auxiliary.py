"""Auxiliary tasks of regularized multitask fine-tuning: masked language and masked image modelling.

Kulkarni, Dery, Setlur, Raghunathan, Talwalkar & Neubig, "Multitask
Learning Can Improve Worst-Group Outcomes", TMLR 2024: fine-tune the
backbone on the end task and, through the same body, on a self-supervised
task built from the end-task inputs, with an L1 penalty on both pooled
representations (eq. 9)::

    L = L_end + alpha_aux * L_aux + alpha_reg * (mean|h_end| + mean|h_aux|)

:class:`MaskedLM` (text) and :class:`MaskedImageModeling` (images) say
which auxiliary task and with which weights; ``FineTuneClassifier(...,
auxiliary=MaskedLM())`` trains it. This module holds the specifications,
the seeded masking, and the training view that pairs every end-task row
with an auxiliary row (task-heterogeneous batches, the paper's App. A.1);
the heads are in :mod:`skgroup.finetune._mtl_model`.
"""

import math
from numbers import Integral, Real
from typing import NamedTuple

import numpy as np
import torch
from sklearn.base import BaseEstimator
from sklearn.utils._param_validation import Interval, StrOptions

__all__ = ["MaskedLM", "MaskedImageModeling", "AuxBatch", "resolve_auxiliary", "mask_tokens", "mask_patches",
           "AuxiliaryDataset", "AuxiliaryCollate"]


class _AuxiliaryTask(BaseEstimator):
    """Parameters shared by the auxiliary tasks (nested parameters of FineTuneClassifier:
    ``set_params(auxiliary__alpha_aux=...)`` works, so a search can tune them)."""

    modality = None

    def check(self):
        self._validate_params()
        return self


class MaskedLM(_AuxiliaryTask):
    """Masked language modelling on the end-task texts (BERT's recipe) as the auxiliary task.

    Of each text's tokens (never special tokens such as [CLS], [SEP] or
    padding), each is selected with probability ``mask_prob``; a selected
    token becomes [MASK] with probability ``mask_replace``, a random
    non-special token with probability ``random_replace``, and stays
    itself otherwise (BERT's 15%, 80/10/10, Devlin et al. 2019). ``L_aux``
    is the cross-entropy of the MLM head's prediction of the original
    token, averaged over the selected tokens of the batch only.

    The head is the checkpoint's own MLM head (BERT's ``cls.predictions``,
    RoBERTa's ``lm_head``) when the folder holds one. A checkpoint without
    (a sentence-transformers model such as all-MiniLM-L6-v2 is a bare
    ``BertModel``) gets a BERT-style head built here: a dense layer, the
    model's activation and a LayerNorm, then a decoder whose weight *is*
    the input word-embedding matrix (tied, as BERT's) plus a bias; its
    transform layer starts untrained (a warning says so), so the first
    steps' MLM gradients through the body are partly noise.

    Parameters
    ----------
    alpha_aux : float >= 0, default=1.0
        Weight of the MLM loss (0: end task and L1 penalty only).
    alpha_reg : float >= 0, default=exp(-1)
        Weight of the L1 penalty on the pooled representations. The paper
        searches both in {e^-1, e^0, e^1}; the defaults are the frozen
        estimator's (:class:`~skgroup.RegularizedMTLClassifier`).
    mask_prob : float in (0, 1], default=0.15
    mask_replace : float in [0, 1], default=0.8
    random_replace : float in [0, 1], default=0.1
        ``mask_replace + random_replace <= 1``; the rest stay unchanged.
    head : {'auto', 'checkpoint', 'new'}, default='auto'
        'auto': the checkpoint's head if it has one, else a new one;
        'checkpoint': require the checkpoint's; 'new': always build one.
    """

    modality = "text"
    _parameter_constraints = {
        "alpha_aux": [Interval(Real, 0, None, closed="left")],
        "alpha_reg": [Interval(Real, 0, None, closed="left")],
        "mask_prob": [Interval(Real, 0, 1, closed="right")],
        "mask_replace": [Interval(Real, 0, 1, closed="both")],
        "random_replace": [Interval(Real, 0, 1, closed="both")],
        "head": [StrOptions({"auto", "checkpoint", "new"})],
    }

    def __init__(self, *, alpha_aux=1.0, alpha_reg=math.exp(-1), mask_prob=0.15, mask_replace=0.8,
                 random_replace=0.1, head="auto"):
        self.alpha_aux = alpha_aux
        self.alpha_reg = alpha_reg
        self.mask_prob = mask_prob
        self.mask_replace = mask_replace
        self.random_replace = random_replace
        self.head = head

    def check(self):
        super().check()
        if self.mask_replace + self.random_replace > 1 + 1e-12:
            raise ValueError(f"MaskedLM: mask_replace + random_replace = {self.mask_replace + self.random_replace:g}"
                             " > 1; they are shares of the selected tokens (BERT: 0.8 and 0.1).")
        return self


class MaskedImageModeling(_AuxiliaryTask):
    """Masked image modelling (SimMIM, Xie et al., CVPR 2022) on the end-task images as the auxiliary task.

    Each image's grid of ``mask_patch_size`` x ``mask_patch_size`` patches
    has ``ceil(mask_ratio * n_patches)`` of them masked (drawn without
    replacement, as SimMIM's mask generator). Masked pixels of the
    normalised input are replaced by a learned mask token for a ViT (a
    learned pixel patch of the model's patch size, tiled: the patch
    embedding is linear, so this is SimMIM's learned token in embedding
    space, restricted to the embedding's range) and by zero (the mean
    pixel) for a CNN. SimMIM's one-layer decoder, a 1x1 convolution to
    ``stride^2 * 3`` channels and a pixel shuffle, reconstructs the
    normalised pixels from the backbone's last feature map (a ViT's patch
    tokens); ``L_aux`` is the L1 error on the masked pixels only.

    Parameters
    ----------
    alpha_aux : float >= 0, default=1.0
    alpha_reg : float >= 0, default=exp(-1)
        As in :class:`MaskedLM`.
    mask_ratio : float in (0, 1), default=0.6
        SimMIM's ratio for ViT and Swin.
    mask_patch_size : int, default=32
        SimMIM's; it must divide the input size, and for a ViT be a
        multiple of the model's patch size (so whole tokens are masked).
    """

    modality = "image"
    _parameter_constraints = {
        "alpha_aux": [Interval(Real, 0, None, closed="left")],
        "alpha_reg": [Interval(Real, 0, None, closed="left")],
        "mask_ratio": [Interval(Real, 0, 1, closed="neither")],
        "mask_patch_size": [Interval(Integral, 1, None, closed="left")],
    }

    def __init__(self, *, alpha_aux=1.0, alpha_reg=math.exp(-1), mask_ratio=0.6, mask_patch_size=32):
        self.alpha_aux = alpha_aux
        self.alpha_reg = alpha_reg
        self.mask_ratio = mask_ratio
        self.mask_patch_size = mask_patch_size


_NAMES = {"mlm": MaskedLM, "mim": MaskedImageModeling}


def resolve_auxiliary(auxiliary, backbone):
    """The validated task of ``FineTuneClassifier(auxiliary=...)`` for ``backbone``, or None."""
    if auxiliary is None:
        return None
    if isinstance(auxiliary, str):
        if auxiliary not in _NAMES:
            raise ValueError(f"auxiliary must be 'mlm', 'mim', MaskedLM(...), MaskedImageModeling(...) or None; "
                             f"got {auxiliary!r}.")
        auxiliary = _NAMES[auxiliary]()
    if not isinstance(auxiliary, _AuxiliaryTask):
        raise TypeError(f"auxiliary must be 'mlm', 'mim', MaskedLM(...), MaskedImageModeling(...) or None; got "
                        f"{type(auxiliary).__name__}.")
    task = auxiliary.check()
    if task.modality != backbone.modality:
        fix = {"image": "auxiliary='mim' (MaskedImageModeling)", "text": "auxiliary='mlm' (MaskedLM)"}.get(
            backbone.modality, "auxiliary=None")
        raise ValueError(f"auxiliary={type(task).__name__}(...) needs a {task.modality} backbone, but "
                         f"{backbone.name} reads {backbone.modality}: use {fix}.")
    return task


class AuxBatch(NamedTuple):
    """A task-heterogeneous training batch: the end-task batch and the masked auxiliary batch.

    ``target``: for MLM, a dict like ``aux`` (a key per tokenized
    sequence) of label tensors, the original token at selected positions
    and -100 elsewhere; for MIM, the (B, H, W) boolean pixel mask.
    """

    end: object
    aux: object
    target: object


# -- masking -------------------------------------------------------------------


def mask_tokens(input_ids, attention_mask, rngs, *, special_ids, mask_id, random_ids, mask_prob=0.15,
                mask_replace=0.8, random_replace=0.1):
    """BERT masking of a padded batch, each row from its own generator: (masked ids, labels).

    Row r draws three numbers per real (attention-mask) position, in order,
    from ``rngs[r]``, whatever the padding: selection (< ``mask_prob``,
    among non-special tokens), the replacement kind, and a random token of
    ``random_ids``. ``labels`` holds the original token at selected
    positions and -100 (cross-entropy's ignore index) elsewhere.
    """
    ids = input_ids.clone()
    labels = torch.full_like(input_ids, -100)
    special = torch.as_tensor(np.asarray(special_ids, dtype=np.int64))
    random_ids = np.asarray(random_ids, dtype=np.int64)
    for r, rng in enumerate(rngs):
        real = torch.nonzero(attention_mask[r]).flatten()
        n = real.shape[0]
        u, v, k = rng.random(n), rng.random(n), rng.integers(0, random_ids.shape[0], n)
        candidate = ~torch.isin(ids[r, real], special)
        sel = torch.from_numpy(u < mask_prob) & candidate
        pos = real[sel]
        labels[r, pos] = ids[r, pos]
        v_sel = v[sel.numpy()]
        ids[r, pos[torch.from_numpy(v_sel < mask_replace)]] = int(mask_id)
        rnd = (v_sel >= mask_replace) & (v_sel < mask_replace + random_replace)
        ids[r, pos[torch.from_numpy(rnd)]] = torch.from_numpy(random_ids[k[sel.numpy()][rnd]])
    return ids, labels


def mask_patches(rng, height, width, patch, ratio):
    """A (height, width) boolean pixel mask: ceil(ratio * n) of the n patch x patch cells, drawn by ``rng``."""
    gh, gw = height // patch, width // patch
    n = gh * gw
    cells = np.zeros(n, dtype=bool)
    cells[rng.permutation(n)[: int(math.ceil(ratio * n))]] = True
    return cells.reshape(gh, gw).repeat(patch, axis=0).repeat(patch, axis=1)


# -- the training view -----------------------------------------------------------------


class AuxiliaryDataset:
    """Training rows paired with auxiliary rows: ``dataset[i] = (end item, aux item, mask seed)``.

    The end item is ``end_view[i]`` (the usual training view, augmented
    when it is). The auxiliary row is drawn uniformly from the training
    inputs, and its masking seeded, by a generator of (seed, epoch, i):
    the same pairing and masks for the same row and epoch in any process
    or worker, and, like the paper's separate auxiliary loader, auxiliary
    rows that follow neither the end task's sampler (JTT's upweighting,
    class balancing) nor its order.
    """

    def __init__(self, end_view, aux_view):
        self.end_view = end_view
        self.aux_view = aux_view
        self.seed = end_view.seed
        self.epoch = 0

    def set_epoch(self, epoch):
        self.epoch = int(epoch)
        self.end_view.set_epoch(epoch)

    def fingerprint(self):
        from ..engine._fingerprint import describe

        return {"end": describe(self.end_view), "aux": describe(self.aux_view), "seed": self.seed}

    def __len__(self):
        return len(self.end_view)

    def __getitem__(self, i):
        # the constant tells these draws from the augmentation's (seed, epoch, row) stream apart
        rng = np.random.default_rng([self.seed, self.epoch, int(i), 0x4D544C])
        j = int(rng.integers(0, len(self.aux_view)))
        item = self.aux_view.inputs.get(j)
        if self.aux_view.augment is not None:
            item = self.aux_view.augment(item, rng)
            if hasattr(getattr(self.aux_view.backbone, "preprocessing", None), "to_uint8"):
                prepared = np.asarray(item, dtype=np.uint8)
            else:
                prepared = self.aux_view.backbone.prepare(item)
        else:
            prepared = self.aux_view.backbone.prepare(item)
        return self.end_view[i], prepared, int(rng.integers(0, 2**63 - 1))


class AuxiliaryCollate:
    """Collate :class:`AuxiliaryDataset` items into an :class:`AuxBatch`, masking the auxiliary batch."""

    def __init__(self, backbone, task):
        self.backbone = backbone
        self.task = task
        if task.modality == "text":
            tok = backbone.tokenizer
            if tok.mask_token_id is None:
                raise ValueError(f"auxiliary=MaskedLM: the tokenizer of {backbone.name} has no mask token; "
                                 "masked language modelling needs one (use a BERT-family checkpoint).")
            self.mask_id = int(tok.mask_token_id)
            self.special_ids = sorted(set(int(t) for t in tok.all_special_ids))
            self.random_ids = np.setdiff1d(np.arange(len(tok)), self.special_ids)
            if self.random_ids.shape[0] == 0:
                raise ValueError(f"auxiliary=MaskedLM: the tokenizer of {backbone.name} holds special tokens only "
                                 f"({len(tok)} entries), so every word is [UNK] and there is nothing to predict; "
                                 "check that its vocabulary loaded.")

    def __call__(self, items):
        end = self.backbone.collate([e for e, _, _ in items])
        aux = self.backbone.collate([a for _, a, _ in items])
        rngs = [np.random.default_rng(s) for _, _, s in items]
        t = self.task
        if t.modality == "text":
            masked, labels = {}, {}
            for key, enc in aux.items():  # 'single', or 'a' and 'b' of siamese pairs
                ids, lab = mask_tokens(enc["input_ids"], enc["attention_mask"], rngs, special_ids=self.special_ids,
                                       mask_id=self.mask_id, random_ids=self.random_ids, mask_prob=t.mask_prob,
                                       mask_replace=t.mask_replace, random_replace=t.random_replace)
                masked[key] = {**enc, "input_ids": ids}
                labels[key] = lab
            return AuxBatch(end, masked, labels)
        h, w = (aux.shape[1], aux.shape[2]) if aux.dtype == torch.uint8 else (aux.shape[2], aux.shape[3])
        check_mask_geometry(t, h, w, None)
        mask = np.stack([mask_patches(rng, h, w, t.mask_patch_size, t.mask_ratio) for rng in rngs])
        return AuxBatch(end, aux, torch.from_numpy(mask))


def check_mask_geometry(task, height, width, model_patch):
    """Clear errors for a mask patch that does not tile the input (or a ViT's patches)."""
    p = task.mask_patch_size
    if height % p or width % p:
        divisors = [d for d in (32, 16, 8, 4) if height % d == 0 and width % d == 0]
        raise ValueError(f"MaskedImageModeling(mask_patch_size={p}) must divide the input size {height}x{width}: "
                         f"pass mask_patch_size={divisors[0] if divisors else 1} (or another common divisor).")
    if model_patch and p % model_patch:
        raise ValueError(f"MaskedImageModeling(mask_patch_size={p}) must be a multiple of the ViT's patch size "
                         f"{model_patch}, so that whole tokens are masked.")
