"""What TRL cannot express as EasyR1 does, shown equivalent (or the difference sized) on a few tensors.

EasyR1's loss (si0wang/LLaVA-Critic-R1@6fd42d1, EasyR1/verl/trainer/core_algos.py:331-352 and
verl/workers/actor/dp_actor.py:314-339) is written out here from that source; TRL's is read from the
installed trl, so a TRL release that changes its formula fails `test_trl_still_computes_the_loss_this_way`.
"""

from __future__ import annotations

import inspect
import math

import pytest

EPS_LOW, EPS_HIGH, DUAL = 0.2, 0.3, 3.0


def easyr1_policy_loss(old_logp, logp, advantages, mask):
    """core_algos.compute_policy_loss: PPO clip, then the dual clip for negative advantages, masked token mean."""
    import torch  # in each function, not at the top: collecting the suite need not import torch (2 s)

    log_ratio = logp - old_logp
    ratio = torch.exp(log_ratio)
    clipped_ratio = torch.exp(torch.clamp(log_ratio, math.log(1 - EPS_LOW), math.log(1 + EPS_HIGH)))
    loss1, loss2, loss3 = -advantages * ratio, -advantages * clipped_ratio, -advantages * DUAL
    higher = torch.max(loss1, loss2)
    lower = torch.min(higher, loss3)
    per_token = torch.where(advantages < 0, lower, higher)
    return (per_token * mask).sum() / mask.sum()  # VF.masked_mean


def trl_per_token_loss(old_logp, logp, advantages):
    """GRPOTrainer._compute_loss for loss_type bnpo/grpo with delta set (token-level ratios)."""
    import torch

    coef_1 = torch.exp(logp - old_logp)
    coef_2 = torch.clamp(coef_1, 1 - EPS_LOW, 1 + EPS_HIGH)
    coef_1 = torch.clamp(coef_1, max=DUAL)
    return -torch.min(coef_1 * advantages, coef_2 * advantages)


def trl_bnpo(per_token, mask):
    return (per_token * mask).sum() / mask.sum().clamp(min=1.0)


def _batch(seed: int, sequences: int = 4, length: int = 7):
    import torch

    generator = torch.Generator().manual_seed(seed)
    old = torch.randn(sequences, length, generator=generator)
    # ratios from 0.05 to ~20: inside the clip range, past 1 + eps_high and past the dual clip of 3
    new = (old + 3 * torch.randn(sequences, length, generator=generator)).requires_grad_()
    advantages = torch.randn(sequences, 1, generator=generator).expand(sequences, length)
    mask = (torch.rand(sequences, length, generator=generator) > 0.25).float()
    mask[:, 0] = 1
    return old, new, advantages, mask


@pytest.mark.parametrize("seed", range(5))
def test_delta_is_easyr1s_dual_clip(seed):
    import torch

    old, new, advantages, mask = _batch(seed)
    ratios = torch.exp(new - old)
    assert (ratios > DUAL).any() and ((ratios > 1 + EPS_HIGH) & (ratios < DUAL)).any() and (ratios < 1 - EPS_LOW).any()
    easyr1 = easyr1_policy_loss(old, new, advantages, mask)
    (easyr1_grad,) = torch.autograd.grad(easyr1, new)
    trl = trl_bnpo(trl_per_token_loss(old, new, advantages), mask)
    (trl_grad,) = torch.autograd.grad(trl, new)
    assert torch.allclose(easyr1, trl, atol=1e-6)
    assert torch.allclose(easyr1_grad, trl_grad, atol=1e-7)


def test_bnpo_over_micro_batches_of_four_is_easyr1s_masked_token_mean():
    """EasyR1: each micro-batch of 4 sequences contributes masked_mean / gradient_accumulation.
    TRL bnpo with per_device_train_batch_size 4: sum / mask.sum() per micro-batch / gradient_accumulation."""
    import torch

    accumulation = 3
    batches = [_batch(seed) for seed in range(accumulation)]
    easyr1 = sum(easyr1_policy_loss(*b) / accumulation for b in batches)
    trl = sum(trl_bnpo(trl_per_token_loss(*b[:3]), b[3]) / accumulation for b in batches)
    assert torch.allclose(easyr1, trl, atol=1e-6)
    for _, new, _, _ in batches:
        easyr1_grad = torch.autograd.grad(easyr1, new, retain_graph=True)[0]
        trl_grad = torch.autograd.grad(trl, new, retain_graph=True)[0]
        assert torch.allclose(easyr1_grad, trl_grad, atol=1e-7)


def test_k3_kl_equals_easyr1s_low_var_kl_until_its_clamp():
    """EasyR1 clamps k3 to [-10, 10] (core_algos.py:420-423); TRL does not. They differ only where the
    reference gives a token more than ~e^2.5 = 12.6 times the policy's probability."""
    import torch

    log_ratio = torch.linspace(-6, 6, 1201)  # ref_logp - logp
    k3 = torch.exp(log_ratio) - log_ratio - 1  # TRL's per_token_kl with use_bias_correction_kl False
    easyr1 = torch.clamp(torch.exp(log_ratio) - log_ratio - 1, min=-10, max=10)
    differs = log_ratio[~torch.isclose(k3, easyr1)]
    assert differs.min() > 2.52 and differs.max() == log_ratio.max()
    assert torch.equal(k3[log_ratio < 2.5], easyr1[log_ratio < 2.5])


def test_trl_still_computes_the_loss_this_way():
    from trl import GRPOTrainer

    source = " ".join(inspect.getsource(GRPOTrainer._compute_loss).split())
    for line in ("coef_2 = torch.clamp(coef_1, 1 - self.epsilon_low, 1 + self.epsilon_high)",
                 "coef_1 = torch.clamp(coef_1, max=self.args.delta)",
                 "per_token_loss = -torch.min(per_token_loss1, per_token_loss2)",
                 "loss = (per_token_loss * mask).sum() / mask.sum().clamp(min=1.0)",
                 "torch.exp(ref_per_token_logps - per_token_logps) - (ref_per_token_logps - per_token_logps) - 1",
                 "if self.args.use_bias_correction_kl: per_token_kl = per_token_kl * coef_1"):
        assert line in source, line


def test_weight_decay_exemptions_and_their_size(tiny_qwen_dir):
    """HF's Trainer decays no bias or norm weight; EasyR1's AdamW decays every parameter
    (fsdp_workers.py:299-305). Decoupled decay shrinks a weight by lr * wd per step, so over the
    official schedule (~4,700 optimiser steps at lr 1e-6, wd 0.01) the exempt weights end at most
    ~4.7e-5 (relative) larger than EasyR1's would."""
    from transformers import Qwen2_5_VLForConditionalGeneration, Trainer

    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(tiny_qwen_dir)
    decayed = set(Trainer.get_decay_parameter_names(None, model))
    exempt = {name for name, _ in model.named_parameters()} - decayed
    assert exempt and all(name.endswith("bias") or "norm" in name or "ln_q" in name for name in exempt)
    relative = 1 - (1 - 1e-6 * 0.01) ** 4_700
    assert 4.6e-5 < relative < 4.8e-5
