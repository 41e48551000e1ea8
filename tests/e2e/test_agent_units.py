"""Units of the PPO agent (mlir_rl.agent) that need no server: features, masks, the action distribution, GAE."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="the agent needs PyTorch (Debian: python3-torch)")

from mlir_rl.agent import ActorCritic, encode, feature_sizes, gae, random_actions  # noqa: E402
from mlir_rl.agent.features import (TYPE_INTERCHANGE, TYPE_NO_TRANSFORMATION, TYPE_TILING,  # noqa: E402
                                    TYPE_UNROLL, TYPE_VECTORIZATION)
from mlir_rl.agent.policy import masks_to_torch  # noqa: E402

L, K, T = 4, 5, 8  # small spaces: 4 loops, 5 tile choices, 8 types


def observation(batch: int = 1, loops: int = 3, rng: np.random.Generator = None):
    """A batch of observations shaped like the server's (max_loops L, tile choices K, 7 accesses)."""
    rng = rng or np.random.default_rng(0)
    obs = {}
    for prefix in ("", "producer_"):
        obs[prefix + "op_type"] = np.zeros((batch, 6), np.float32)
        obs[prefix + "op_type"][:, 1] = 1
        bounds = np.zeros((batch, L), np.int64)
        bounds[:, :loops] = 64
        obs[prefix + "loop_bounds"] = bounds
        obs[prefix + "loop_bounds_log2"] = np.log2(1 + bounds).astype(np.float32)
        it = np.zeros((batch, L), np.int32)
        it[:, :loops] = 1
        it[:, loops - 1] = 2
        obs[prefix + "iterator_types"] = it
        obs[prefix + "load_access"] = rng.integers(0, 2, (batch, 7, L, L + 1)).astype(np.int32)
        obs[prefix + "store_access"] = rng.integers(0, 2, (batch, 7, L, L + 1)).astype(np.int32)
        obs[prefix + "access_ranks"] = np.full((batch, 2, 7), -1, np.int32)
        obs[prefix + "op_counts"] = rng.integers(0, 3, (batch, 2, 7)).astype(np.int32)
        obs[prefix + "vectorizable"] = np.zeros((batch, 1), bool)
    obs["progress"] = np.tile(np.array([0, 2, 1, 1], np.int64), (batch, 1))
    obs["action_history"] = np.zeros((batch, 5, T), np.float32)
    obs["interchange_partial"] = np.full((batch, L), -1, np.int64)
    obs["mask_type"] = np.ones((batch, T), bool)
    tiles = np.zeros((batch, L, K), bool)
    tiles[:, :, 0] = True
    tiles[:, :loops, :] = True
    tiles[:, L - 1, 2:4] = True  # UNROLL's factors share row L-1 (the server's layout)
    obs["mask_tiles"] = tiles
    inter = np.zeros((batch, L), bool)
    inter[:, :loops] = True
    obs["mask_interchange"] = inter
    return obs


def network(hidden: int = 32) -> ActorCritic:
    torch.manual_seed(0)
    sizes = feature_sizes({k: _Box(v.shape[1:], v.dtype) for k, v in observation().items()})
    return ActorCritic(hidden=hidden, **sizes)


class _Box:
    def __init__(self, shape, dtype):
        self.shape, self.dtype = shape, dtype


def test_row_l_minus_1_is_unroll_for_ops_with_fewer_loops():
    enc = encode(observation(loops=3))
    # tiling may only leave the missing loop L-1 alone; UNROLL keeps the server's row (its factors)
    assert enc.masks.tiles[0, L - 1].tolist() == [True] + [False] * (K - 1)
    assert enc.masks.unroll[0].tolist() == [True, False, True, True, False]
    enc4 = encode(observation(loops=L))  # an op with L loops: row L-1 is its last loop's tile sizes
    assert enc4.masks.tiles[0, L - 1].all()


def test_empty_mask_rows_get_value_zero():
    obs = observation()
    obs["mask_interchange"][:] = False
    enc = encode(obs)
    assert enc.masks.interchange[0].tolist() == [True, False, False, False]


def test_features_are_finite_and_sized():
    enc = encode(observation(batch=3))
    assert enc.op.shape == enc.producer.shape and enc.op.shape[0] == 3
    assert np.isfinite(enc.op).all() and np.isfinite(enc.context).all()
    obs = observation()
    obs["interchange_partial"][0, :2] = [2, 0]
    ctx_open = encode(obs).context
    assert not np.array_equal(ctx_open, encode(observation()).context)  # an open interchange is seen


def _dist(obs, hidden: int = 32):
    net = network(hidden)
    enc = encode(obs)
    from mlir_rl.agent.policy import inputs_to_torch
    dist, value = net(inputs_to_torch(enc), masks_to_torch(enc.masks))
    return dist, value, enc


def test_log_prob_counts_only_the_heads_the_type_reads():
    obs = observation()
    dist, _, _ = _dist(obs)
    base = torch.zeros((1, 2 + L), dtype=torch.long)

    def lp(a):
        return float(dist.log_prob(torch.as_tensor([a]))[0])

    a = base[0].tolist()
    a[0] = TYPE_VECTORIZATION
    b = list(a)
    b[1], b[-1] = 3, 2  # heads VECTORIZATION does not read
    assert lp(a) == pytest.approx(lp(b), abs=1e-6)
    t = list(base[0].tolist())
    t[0] = TYPE_TILING
    t2 = list(t)
    t2[1] = 3  # a tile head TILING reads
    assert lp(t) != pytest.approx(lp(t2), abs=1e-6)
    i = list(base[0].tolist())
    i[0] = TYPE_INTERCHANGE
    i2 = list(i)
    i2[-1] = 1
    assert lp(i) != pytest.approx(lp(i2), abs=1e-6)
    i3 = list(i)
    i3[2] = 4  # a tile head INTERCHANGE does not read
    assert lp(i) == pytest.approx(lp(i3), abs=1e-6)
    u = list(base[0].tolist())
    u[0] = TYPE_UNROLL
    u2, u3 = list(u), list(u)
    u2[L] = 2  # the last tile head, with UNROLL's mask
    u3[1] = 2  # another tile head: not read by UNROLL
    assert lp(u) != pytest.approx(lp(u2), abs=1e-6)
    assert lp(u) == pytest.approx(lp(u3), abs=1e-6)


def test_probabilities_of_all_actions_sum_to_one_and_entropy_is_exact():
    """Enumerates every action whose unread heads are 0: the probabilities sum to 1 and the entropy is the exact
    entropy of that distribution."""
    obs = observation(loops=2)
    obs["mask_tiles"][:, :, 3:] = False  # keep the enumeration small
    obs["mask_tiles"][:, L - 1, 3] = True
    dist, _, enc = _dist(obs)
    m = enc.masks
    actions = []
    for t in np.flatnonzero(m.type[0]):
        if t in (1, 2, 5):
            for tiles in itertools.product(*[np.flatnonzero(m.tiles[0, i]) for i in range(L)]):
                actions.append([t, *tiles, 0])
        elif t == TYPE_UNROLL:
            for v in np.flatnonzero(m.unroll[0]):
                actions.append([t] + [0] * (L - 1) + [v, 0])
        elif t == TYPE_INTERCHANGE:
            for v in np.flatnonzero(m.interchange[0]):
                actions.append([t] + [0] * L + [v])
        else:
            actions.append([t] + [0] * (L + 1))
    n = len(actions)
    net = network()  # the same weights as _dist's
    from mlir_rl.agent.policy import inputs_to_torch
    x = {k: v.expand(n, *v.shape[1:]) for k, v in inputs_to_torch(enc).items()}
    masks = {k: v.expand(n, *v.shape[1:]) for k, v in masks_to_torch(m).items()}
    with torch.no_grad():  # the same distribution on n rows, one action each
        rows, _ = net(x, masks)
        probs = rows.log_prob(torch.as_tensor(actions)).exp().numpy()
    probs = np.array(probs)
    assert probs.sum() == pytest.approx(1.0, abs=1e-5)
    exact = float(-(probs * np.log(probs)).sum())
    assert float(dist.entropy()[0]) == pytest.approx(exact, rel=1e-4)


def test_sampled_and_greedy_actions_are_legal():
    rng = np.random.default_rng(1)
    obs = observation(batch=64, loops=3, rng=rng)
    for i in range(64):  # random masks, each row keeps a legal value
        obs["mask_type"][i] = rng.random(T) < 0.5
        obs["mask_type"][i, TYPE_NO_TRANSFORMATION] = True
        obs["mask_tiles"][i] = rng.random((L, K)) < 0.5
        obs["mask_tiles"][i, :, 0] = True
    net = network()
    enc = encode(obs)
    gen = torch.Generator().manual_seed(0)
    for greedy in (False, True):
        a, logp, v = net.act(enc, greedy=greedy, generator=gen)
        assert np.isfinite(logp).all() and np.isfinite(v).all()
        for i in range(64):
            t = a[i, 0]
            assert enc.masks.type[i, t]
            if t in (1, 2, 5):
                assert all(enc.masks.tiles[i, loop, a[i, 1 + loop]] for loop in range(L))
            else:
                assert (a[i, 1:L] == 0).all()  # heads the type does not read are 0
            if t == TYPE_UNROLL:
                assert enc.masks.unroll[i, a[i, L]]
            if t == TYPE_INTERCHANGE:
                assert enc.masks.interchange[i, a[i, -1]]
            else:
                assert a[i, -1] == 0
    r = random_actions(enc, np.random.default_rng(0))
    for i in range(64):
        assert enc.masks.type[i, r[i, 0]]


def test_greedy_is_deterministic_and_sampling_is_seeded():
    net = network()
    enc = encode(observation(batch=8))
    g1 = net.act(enc, greedy=True)[0]
    g2 = net.act(enc, greedy=True)[0]
    assert np.array_equal(g1, g2)
    s1 = net.act(enc, generator=torch.Generator().manual_seed(5))[0]
    s2 = net.act(enc, generator=torch.Generator().manual_seed(5))[0]
    assert np.array_equal(s1, s2)


def test_gae_matches_hand_computation():
    rewards = np.array([[0.0], [0.0], [1.0], [0.0]])
    values = np.array([[0.5], [0.6], [0.7], [0.2]])
    dones = np.array([[0.0], [0.0], [1.0], [0.0]])
    last = np.array([0.3])
    adv = gae(rewards, values, dones, last, gamma=1.0, lam=0.5)
    # t=3: 0 + 0.3 - 0.2 = 0.1; t=2 (ends the episode): 1 - 0.7 = 0.3; t=1: 0.7 - 0.6 + 0.5 * 0.3 = 0.25;
    # t=0: 0.6 - 0.5 + 0.5 * 0.25 = 0.225
    assert adv[:, 0] == pytest.approx([0.225, 0.25, 0.3, 0.1])


def test_export_and_load_policy_roundtrip(tmp_path):
    from mlir_rl.agent import export_policy, load_policy

    net = network(hidden=16)
    path = str(tmp_path / "policy.pt")
    export_policy(path, net, half=False)
    back = load_policy(path)
    enc = encode(observation(batch=4))
    assert np.array_equal(net.act(enc, greedy=True)[0], back.act(enc, greedy=True)[0])
    export_policy(path, net)  # float16 weights: same structure, values within half precision
    half = load_policy(path)
    assert all(torch.allclose(a, b, atol=1e-2) for a, b in zip(net.parameters(), half.parameters()))
    assert math.isfinite(float(half.value(enc)[0]))


def test_a_policy_trained_with_fewer_action_types_acts_on_a_newer_server():
    # Trained against 8 types; the server now has a 9th (PEELED_TILING): encode(obs, 8) leaves it out of the inputs
    # and the masks, so the policy's sizes fit and it never picks the new type.
    from mlir_rl.agent import policy_mismatch
    old = network()
    newer = observation(batch=16)
    newer["action_history"] = np.zeros((16, 5, T + 1), np.float32)
    newer["mask_type"] = np.ones((16, T + 1), bool)
    space = {k: _Box(v.shape[1:], v.dtype) for k, v in newer.items()}
    assert feature_sizes(space)["num_types"] == T + 1
    assert policy_mismatch(old, space) is None
    enc = encode(newer, old.config["num_types"])
    assert enc.masks.type.shape == (16, T)
    with torch.no_grad():
        actions = old.act(enc, greedy=False, generator=torch.Generator().manual_seed(0))[0]
    assert (actions[:, 0] < T).all()
    # Sizes that differ otherwise are refused with the reason.
    other = dict(space, mask_interchange=_Box((L + 1,), bool))
    assert "num_interchange" in policy_mismatch(old, other)


def _nine_types(batch: int = 1, loops: int = 3):
    """An observation of a server with PEELED_TILING (type 8): its own tile mask, here allowing only sizes that
    mask_tiles forbids (values 3 and 4 besides 0)."""
    obs = observation(batch=batch, loops=loops)
    obs["mask_type"] = np.ones((batch, T + 1), bool)
    obs["action_history"] = np.zeros((batch, 5, T + 1), np.float32)
    obs["mask_tiles"][:, :loops, 3:] = False
    peeled = np.zeros((batch, L, K), bool)
    peeled[:, :, 0] = True
    peeled[:, :loops, 3:] = True
    obs["mask_tiles_peeled"] = peeled
    return obs


def test_peeled_tiling_reads_the_tile_heads_under_its_own_mask():
    from mlir_rl.agent.features import TYPE_PEELED_TILING
    from mlir_rl.agent.policy import inputs_to_torch
    obs = _nine_types(loops=2)
    obs["mask_tiles"][:, L - 1, 3] = True  # UNROLL's factor 3 (row L-1), as in the enumeration test above
    torch.manual_seed(0)
    sizes = feature_sizes({k: _Box(v.shape[1:], v.dtype) for k, v in obs.items()})
    assert sizes["num_types"] == T + 1
    net = ActorCritic(hidden=32, **sizes)
    enc = encode(obs)
    m = enc.masks
    assert m.tiles_peeled[0, 0].tolist() == [True, False, False, True, True]
    # Every action (unread heads 0) enumerated: probabilities sum to 1, the entropy is exact.
    actions = []
    for t in np.flatnonzero(m.type[0]):
        if t in (1, 2, 5, TYPE_PEELED_TILING):
            rows = m.tiles_peeled if t == TYPE_PEELED_TILING else m.tiles
            for tiles in itertools.product(*[np.flatnonzero(rows[0, i]) for i in range(L)]):
                actions.append([t, *tiles, 0])
        elif t == TYPE_UNROLL:
            actions += [[t] + [0] * (L - 1) + [v, 0] for v in np.flatnonzero(m.unroll[0])]
        elif t == TYPE_INTERCHANGE:
            actions += [[t] + [0] * L + [v] for v in np.flatnonzero(m.interchange[0])]
        else:
            actions.append([t] + [0] * (L + 1))
    n = len(actions)
    x = {k: v.expand(n, *v.shape[1:]) for k, v in inputs_to_torch(enc).items()}
    masks = {k: v.expand(n, *v.shape[1:]) for k, v in masks_to_torch(m).items()}
    with torch.no_grad():
        rows, _ = net(x, masks)
        probs = rows.log_prob(torch.as_tensor(actions)).exp().numpy()
        dist, _ = net(inputs_to_torch(enc), masks_to_torch(m))
    assert probs.sum() == pytest.approx(1.0, abs=1e-5)
    assert float(dist.entropy()[0]) == pytest.approx(float(-(probs * np.log(probs)).sum()), rel=1e-4)
    # Sampled PEELED_TILING actions use sizes only its mask allows; the other tiling types never do.
    big = _nine_types(batch=256, loops=2)
    enc_big = encode(big)
    a, _, _ = net.act(enc_big, generator=torch.Generator().manual_seed(0))
    peeled_rows = a[a[:, 0] == TYPE_PEELED_TILING]
    assert len(peeled_rows) > 0 and (peeled_rows[:, 1:3] >= 3).any()
    assert all(enc_big.masks.tiles_peeled[0, loop, v] for row in peeled_rows for loop, v in enumerate(row[1:1 + L]))
    tiling_rows = a[a[:, 0] == TYPE_TILING]
    assert len(tiling_rows) > 0 and (tiling_rows[:, 1:3] < 3).all()
    r = random_actions(enc_big, np.random.default_rng(0))
    r_peeled = r[r[:, 0] == TYPE_PEELED_TILING]
    assert len(r_peeled) > 0 and all(enc_big.masks.tiles_peeled[0, loop, v] for row in r_peeled
                                     for loop, v in enumerate(row[1:1 + L]))
    # A policy trained with 8 types on this server: PEELED_TILING is masked out and never sampled.
    enc8 = encode(big, num_types=T)
    a8, _, _ = network().act(enc8, generator=torch.Generator().manual_seed(0))
    assert (a8[:, 0] != TYPE_PEELED_TILING).all()
