"""Semantic experts (paper III-B): shapes, exact no-op at init, routing mask, placement, sizes."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from engine.config import ExpertConfig
from engine.errors import ConfigError, EngineError
from engine.model.experts import ExpertMLP, SemanticExperts, attach_experts
from engine.model.roles import IMAGE, TEXT, TokenRoles, semantic_role
from tests.engine.tiny import one_torch_thread  # noqa: F401  (fixture)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

D, L, R = 32, 3, 8


def _roles(batch: int = 2) -> torch.Tensor:
    # [text x2, image x4, level0 x3, level1 x3, level2 x3, text x3]
    row = (
        [TEXT] * 2
        + [IMAGE] * 4
        + [semantic_role(k) for k in range(L) for _ in range(3)]
        + [TEXT] * 3
    )
    return torch.tensor([row] * batch)


def _trained_experts(seed: int = 0) -> SemanticExperts:
    torch.manual_seed(seed)
    experts = SemanticExperts(D, L, R)
    with torch.no_grad():
        experts.up_weight.normal_(0, 0.1)  # pretend training moved the zero-initialised weights
    return experts


def test_shapes_and_parameter_count():
    experts = _trained_experts()
    roles = _roles()
    x = torch.randn(2, roles.shape[1], D)
    assert experts(x, roles).shape == (2, roles.shape[1], D)
    assert experts.expert_outputs(x, roles).shape == (2, roles.shape[1], L, D)
    # Each expert: D -> r -> D without biases = 2 * D * r weights.
    assert experts.down_weight.shape == (L, R, D) and experts.up_weight.shape == (L, R, D)
    per_expert = [experts.down_weight[k].numel() + experts.up_weight[k].numel() for k in range(L)]
    assert per_expert == [2 * D * R] * L
    assert experts.gate.bias is None and experts.gate.weight.shape == (L, D)


def test_untrained_experts_add_exact_zeros():
    experts = SemanticExperts(D, L, R)
    roles = _roles()
    x = torch.randn(2, roles.shape[1], D)
    assert torch.equal(experts(x, roles), torch.zeros_like(x))
    mlp = nn.Sequential(nn.Linear(D, 2 * D), nn.GELU(), nn.Linear(2 * D, D))
    shared = TokenRoles()
    wrapped = ExpertMLP(mlp, experts, shared)
    shared.set(roles)
    assert torch.equal(wrapped(x), mlp(x))


def test_routing_mask_matches_the_paper():
    experts = _trained_experts()
    mask = experts.routing_mask(_roles(1))[0]  # (T, L)
    assert mask[:6].all()  # text and image tokens go to every expert
    for k in range(L):
        sem_k = slice(6 + 3 * k, 9 + 3 * k)
        assert mask[sem_k, k].all()
        others = [j for j in range(L) if j != k]
        assert not mask[sem_k][:, others].any()


@pytest.mark.parametrize("changed_level,expert", [(1, 0), (2, 0), (0, 1), (2, 1), (0, 2), (1, 2)])
def test_other_levels_do_not_reach_an_expert(changed_level, expert):
    """Changing level-``changed_level`` semantic tokens changes nothing in ``expert``'s output."""
    experts = _trained_experts()
    roles = _roles()
    x = torch.randn(2, roles.shape[1], D)
    x_changed = x.clone()
    level_positions = roles == semantic_role(changed_level)
    x_changed[level_positions] = torch.randn_like(x_changed[level_positions]) * 10
    before = experts.expert_outputs(x, roles)[:, :, expert]
    after = experts.expert_outputs(x_changed, roles)[:, :, expert]
    assert torch.equal(before, after)
    # ... while its own expert does see them
    own_before = experts.expert_outputs(x, roles)[:, :, changed_level]
    own_after = experts.expert_outputs(x_changed, roles)[:, :, changed_level]
    assert not torch.equal(own_before, own_after)


def test_merge_uses_weight_one_for_own_level_and_gate_for_the_rest():
    experts = _trained_experts()
    roles = _roles()
    x = torch.randn(2, roles.shape[1], D)
    weights = experts.merge_weights(x, roles)  # (B, T, L)
    for k in range(L):
        own = roles == semantic_role(k)
        assert torch.equal(
            weights[own], torch.nn.functional.one_hot(torch.full((int(own.sum()),), k), L).float()
        )
    plain = roles < semantic_role(0)
    expected = torch.softmax(experts.gate(x), dim=-1)[plain]
    torch.testing.assert_close(weights[plain], expected)
    # The fused forward equals the explicit sum of masked expert outputs times merge weights.
    explicit = (experts.expert_outputs(x, roles) * weights[..., None]).sum(dim=2)
    torch.testing.assert_close(experts(x, roles), explicit, rtol=1e-5, atol=1e-6)


def test_all_text_fast_path_equals_explicit_text_roles():
    experts = _trained_experts()
    x = torch.randn(2, 5, D)
    text = torch.full((2, 5), TEXT)
    torch.testing.assert_close(experts(x, None), experts(x, text), rtol=1e-6, atol=1e-7)
    shared = TokenRoles()
    wrapped = ExpertMLP(nn.Identity(), experts, shared)
    shared.set_text(2, 5)
    torch.testing.assert_close(wrapped(x), x + experts(x, text), rtol=1e-6, atol=1e-7)


class _Layer(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.mlp = nn.Linear(D, D)


@pytest.mark.parametrize("num_layers,expected", [(8, (3, 7)), (12, (3, 7, 11)), (3, ())])
def test_experts_sit_in_every_fourth_layer(num_layers, expected):
    layers = nn.ModuleList(_Layer() for _ in range(num_layers))
    experts = attach_experts(layers, ExpertConfig(rank=R), D, L, TokenRoles(), torch.float32)
    assert tuple(int(k) for k in experts) == expected
    for i, layer in enumerate(layers):
        assert isinstance(layer.mlp, ExpertMLP) == (i in expected)


def test_attaching_twice_is_refused():
    layers = nn.ModuleList(_Layer() for _ in range(4))
    attach_experts(layers, ExpertConfig(rank=R), D, L, TokenRoles(), torch.float32)
    with pytest.raises(ConfigError, match="already has semantic experts"):
        attach_experts(layers, ExpertConfig(rank=R), D, L, TokenRoles(), torch.float32)


def test_explicit_layer_list_and_bad_layers():
    layers = nn.ModuleList(_Layer() for _ in range(6))
    experts = attach_experts(
        layers, ExpertConfig(rank=R, layers=(0, 5)), D, L, TokenRoles(), torch.float32
    )
    assert sorted(experts) == ["0", "5"]
    with pytest.raises(ConfigError, match="out of range"):
        ExpertConfig(layers=(6,)).layer_indices(6)


def test_wrapper_refuses_missing_or_mismatched_roles():
    roles = TokenRoles()
    wrapped = ExpertMLP(nn.Linear(D, D), SemanticExperts(D, L, R), roles)
    x = torch.randn(1, 5, D)
    with pytest.raises(EngineError, match="without token roles"):
        wrapped(x)
    roles.set(torch.zeros((1, 4), dtype=torch.long))
    with pytest.raises(EngineError, match="do not match"):
        wrapped(x)
