"""Uni3D's point encoder: point ops against brute force, parameter counts from the architecture,
and checkpoints in Uni3D's released layout (written here from Uni3D's ``point_encoder.py`` key
names and timm's own model) loaded strictly and checked against a forward pass written out here."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import timm
import torch
import torch.nn.functional as F
from test_pointops_ties import kernel_fps

from evalkit.models.checkpoint import CheckpointError
from evalkit.models.pointops import (
    farthest_point_sample,
    gather_points,
    knn_group,
    pc_norm,
    resample,
    square_distance,
)
from evalkit.models.uni3d import (
    NO_COLOUR,
    UNI3D_SIZES,
    UNUSED_TIMM_KEYS,
    Uni3DPointEncoder,
    load_uni3d_checkpoint,
    prepare_points,
    uni3d_config,
)

# ---------------------------------------------------------------------------------------------
# references written out here


def fps_reference(xyz: np.ndarray, n: int) -> list[int]:
    """pointnet2_ops' furthest_point_sample kernel, one cloud: start at index 0, distances start
    at 1e10, points with x^2+y^2+z^2 <= 1e-3 are skipped, each thread keeps its first maximum
    (strict '>'), the threads' maxima reduced in the kernel's order (the literal simulation in
    ``test_pointops_ties``)."""
    return kernel_fps(xyz, n)


def knn_reference(xyz: np.ndarray, centre: np.ndarray, k: int) -> list[int]:
    d = ((xyz.astype(np.float64) - centre.astype(np.float64)) ** 2).sum(1)
    return sorted(np.argsort(d, kind="stable")[:k].tolist())


def group_reference(cloud: np.ndarray, g: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    xyz, rgb = cloud[:, :3], cloud[:, 3:]
    centres = xyz[fps_reference(xyz, g)]
    feats = []
    for c in centres:
        nn_ = knn_reference(xyz, c, k)
        feats.append(np.concatenate([xyz[nn_] - c, rgb[nn_]], axis=1))
    return centres, np.stack(feats)


def forward_reference(sd: dict, cfg, clouds: np.ndarray) -> torch.Tensor:
    """Uni3D's PointcloudEncoder.forward from its checkpoint tensors: the mini-PointNet, bridges,
    position MLP and CLS by hand; the blocks through a whole timm model loaded with the
    checkpoint's ``point_encoder.visual.*`` (all of them, strictly), as Uni3D builds it."""
    w = {k[len("point_encoder.") :]: v.float() for k, v in sd.items() if k.startswith("point_encoder.")}
    groups = [group_reference(c, cfg.num_group, cfg.group_size) for c in clouds]
    centres = torch.tensor(np.stack([g[0] for g in groups]), dtype=torch.float32)
    feats = torch.tensor(np.stack([g[1] for g in groups]), dtype=torch.float32)  # B G K 6

    def conv(x, name):  # 1x1 Conv1d over (..., C, K)
        return torch.einsum("oc,nck->nok", w[f"{name}.weight"][:, :, 0], x) + w[f"{name}.bias"][:, None]

    def bn(x, name):
        mean, var = w[f"{name}.running_mean"][:, None], w[f"{name}.running_var"][:, None]
        return (x - mean) / torch.sqrt(var + 1e-5) * w[f"{name}.weight"][:, None] + w[f"{name}.bias"][:, None]

    b, g, k, _ = feats.shape
    x = feats.reshape(b * g, k, 6).transpose(1, 2)
    x = conv(torch.relu(bn(conv(x, "encoder.first_conv.0"), "encoder.first_conv.1")), "encoder.first_conv.3")
    x = torch.cat([x.max(dim=2, keepdim=True).values.expand(-1, -1, k), x], dim=1)
    x = conv(torch.relu(bn(conv(x, "encoder.second_conv.0"), "encoder.second_conv.1")), "encoder.second_conv.3")
    tokens = x.max(dim=2).values.reshape(b, g, -1)
    tokens = tokens @ w["encoder2trans.weight"].T + w["encoder2trans.bias"]
    pos = F.gelu(centres @ w["pos_embed.0.weight"].T + w["pos_embed.0.bias"])
    pos = pos @ w["pos_embed.2.weight"].T + w["pos_embed.2.bias"]
    x = torch.cat([w["cls_token"].expand(b, -1, -1), tokens], 1) + torch.cat([w["cls_pos"].expand(b, -1, -1), pos], 1)
    head = w.get("visual.head.weight")
    vit = timm_full(cfg, classes=0 if head is None else head.shape[0]).eval()
    vit.load_state_dict({k[len("visual.") :]: v for k, v in w.items() if k.startswith("visual.")}, strict=True)
    with torch.no_grad():
        for blk in vit.blocks:
            x = blk(x)
        x = vit.fc_norm(vit.norm(x[:, 0]))
    return x @ w["trans2embed.weight"].T + w["trans2embed.bias"]


def timm_full(cfg, classes: int = 1000):
    """The whole timm model Uni3D creates for ``cfg`` (patch embedding, head and all)."""
    return timm.create_model(cfg.timm_model, pretrained=False, num_classes=classes, embed_dim=cfg.width,
                             depth=cfg.depth, num_heads=cfg.heads)


def encoder_shapes(cfg) -> dict[str, tuple[int, ...]]:
    """Uni3D's PointcloudEncoder parameters and buffers outside ``visual``, from point_encoder.py."""
    w, c, e = cfg.width, cfg.pc_encoder_dim, cfg.embed_dim
    out: dict[str, tuple[int, ...]] = {}
    for name, ch in (("encoder.first_conv.1", 128), ("encoder.second_conv.1", 512)):
        for p in ("weight", "bias", "running_mean", "running_var"):
            out[f"{name}.{p}"] = (ch,)
        out[f"{name}.num_batches_tracked"] = ()
    out |= {
        "encoder.first_conv.0.weight": (128, 6, 1), "encoder.first_conv.0.bias": (128,),
        "encoder.first_conv.3.weight": (256, 128, 1), "encoder.first_conv.3.bias": (256,),
        "encoder.second_conv.0.weight": (512, 512, 1), "encoder.second_conv.0.bias": (512,),
        "encoder.second_conv.3.weight": (c, 512, 1), "encoder.second_conv.3.bias": (c,),
        "encoder2trans.weight": (w, c), "encoder2trans.bias": (w,),
        "trans2embed.weight": (e, w), "trans2embed.bias": (e,),
        "cls_token": (1, 1, w), "cls_pos": (1, 1, w),
        "pos_embed.0.weight": (128, 3), "pos_embed.0.bias": (128,),
        "pos_embed.2.weight": (w, 128), "pos_embed.2.bias": (w,),
    }
    return out


def uni3d_checkpoint(cfg, seed: int = 0, dtype=torch.float16, classes: int = 1000) -> dict:
    """A random checkpoint as Uni3D's DeepSpeed run saves it: ``{'module': {...}, ...}`` with
    ``point_encoder.…`` keys (the whole timm model under ``visual``) and ``logit_scale``."""
    g = torch.Generator().manual_seed(seed)
    full = timm_full(cfg, classes)
    sd: dict[str, torch.Tensor] = {}
    shapes = {f"visual.{k}": tuple(v.shape) for k, v in full.state_dict().items()} | encoder_shapes(cfg)
    for key, shape in shapes.items():
        if key.endswith("num_batches_tracked"):
            t = torch.tensor(1000)
        elif key.endswith("running_var"):
            t = torch.rand(shape, generator=g) + 0.5
        elif re.search(r"norm\d?\.weight$|\.1\.weight$", key):  # LayerNorm / BatchNorm scales
            t = 1 + 0.1 * torch.randn(shape, generator=g)
        else:
            fan_in = math.prod(shape[1:]) if len(shape) > 1 else 1
            t = torch.randn(shape, generator=g) * (fan_in**-0.5 if len(shape) > 1 else 0.1)
        sd[f"point_encoder.{key}"] = t if t.dtype == torch.long else t.to(dtype)
    sd["logit_scale"] = torch.tensor(math.log(1 / 0.07))
    return {"module": sd, "epoch": 8, "best_acc1": 51.7, "ds_version": "0.10.3",
            "sparse_tensor_module_names": set(), "lr_scheduler": None}


def random_clouds(b: int, n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    xyz = rng.normal(size=(b, n, 3)).astype(np.float32)
    xyz /= np.linalg.norm(xyz, axis=2, keepdims=True).max(axis=1, keepdims=True)
    return np.concatenate([xyz, rng.random((b, n, 3), dtype=np.float32)], axis=2)


# width 64, 2 blocks, 32 patches of 16 points: the three block kinds at test size
SMALL = {
    kind: uni3d_config(kind, width=64, depth=2, heads=2, embed_dim=48, num_group=32, group_size=16)
    for kind in ("tiny", "base", "giant")
}

# ---------------------------------------------------------------------------------------------
# point ops


def test_fps_matches_the_kernel_loop():
    rng = np.random.default_rng(1)
    xyz = rng.normal(size=(3, 400, 3)).astype(np.float32)
    xyz /= np.linalg.norm(xyz, axis=2, keepdims=True)  # a shell of radius 1...
    xyz[:, 5:25] *= 0.015  # ...and 20 points within 0.032 of its centre, about 1 from every other
    # point: farthest once a few centres cover the shell, yet never picked (unless first)
    xyz[2, 0] = 0.0  # ...but the first point is always the first centre
    got = farthest_point_sample(torch.from_numpy(xyz), 48)
    assert got.shape == (3, 48) and got.dtype == torch.long
    for b in range(3):
        assert got[b].tolist() == fps_reference(xyz[b], 48)
    assert not bool(((got >= 5) & (got < 25)).any())


def test_fps_small_example_by_hand():
    # x = 0 (start), 1, 3, 2: farthest from 0 is 3 (index 2); then 1 and 2 are both 1 away: the
    # kernel's 4 threads hold one point each, and thread 1 beats thread 3 in its reduction: index 1
    xyz = torch.tensor([[[0.0, 0, 0], [1, 0, 0], [3, 0, 0], [2, 0, 0]]])
    assert farthest_point_sample(xyz, 3).tolist() == [[0, 2, 1]]
    # with every point pickable, the origin can come back when it is farthest
    xyz2 = torch.tensor([[[0.5, 0, 0], [0.0, 0, 0], [0.6, 0, 0]]])
    assert farthest_point_sample(xyz2, 2).tolist() == [[0, 2]]
    assert farthest_point_sample(xyz2, 2, skip_norm_sq=None).tolist() == [[0, 1]]


def test_knn_matches_brute_force_and_uni3d_distance():
    rng = np.random.default_rng(2)
    xyz = rng.normal(size=(2, 300, 3)).astype(np.float32)
    centres = xyz[:, [3, 77, 150, 299]]
    got = knn_group(torch.from_numpy(xyz), torch.from_numpy(centres), 16)
    assert got.shape == (2, 4, 16)
    for b in range(2):
        for g in range(4):
            assert sorted(got[b, g].tolist()) == knn_reference(xyz[b], centres[b, g], 16)
            d = ((xyz[b, got[b, g].numpy()] - centres[b, g]) ** 2).sum(1)
            assert np.all(np.diff(d) >= -1e-6)  # nearest first
    sq = square_distance(torch.from_numpy(centres), torch.from_numpy(xyz))
    direct = ((centres[:, :, None, :].astype(np.float64) - xyz[:, None, :, :]) ** 2).sum(-1)
    np.testing.assert_allclose(sq.numpy(), direct, atol=1e-5)


def test_gather_points():
    pts = torch.arange(2 * 5 * 3, dtype=torch.float32).reshape(2, 5, 3)
    idx = torch.tensor([[[4, 0]], [[1, 1]]])
    assert torch.equal(gather_points(pts, idx), torch.stack([pts[0, [4, 0]][None], pts[1, [1, 1]][None]]))


def test_pc_norm():
    rng = np.random.default_rng(3)
    xyz = (rng.normal(size=(100, 3)) * [3, 1, 0.5] + [10, -2, 4]).astype(np.float32)
    want = xyz.astype(np.float64) - xyz.astype(np.float64).mean(0)
    want /= np.sqrt((want**2).sum(1)).max()
    got = pc_norm(torch.from_numpy(xyz))
    assert got.dtype == torch.float32
    np.testing.assert_allclose(got.numpy(), want, atol=1e-6)
    assert abs(float(got.norm(dim=1).max()) - 1) < 1e-6
    batched = pc_norm(torch.from_numpy(np.stack([xyz, xyz * 2])))  # (..., N, 3): per cloud
    np.testing.assert_allclose(batched[1].numpy(), want, atol=1e-6)
    with pytest.raises(ValueError, match="coincide"):
        pc_norm(torch.ones(10, 3))


def test_resample_rules():
    pts = torch.arange(10 * 2, dtype=torch.float32).reshape(10, 2)
    same, r = resample(pts, 10)
    assert same is pts and r is False
    up, r = resample(pts, 25, torch.Generator().manual_seed(1))
    assert r is True and up.shape == (25, 2)
    assert torch.equal(up[:10], pts)  # every point kept, in order, first
    assert all(row in pts.tolist() for row in up[10:].tolist())
    down, r = resample(pts, 4, torch.Generator().manual_seed(1))
    rows = [int(v) // 2 for v in down[:, 0].tolist()]
    assert r is True and len(set(rows)) == 4 and rows == sorted(rows)
    again, _ = resample(pts, 4, torch.Generator().manual_seed(1))
    assert torch.equal(again, down) and torch.equal(resample(pts, 4)[0], resample(pts, 4)[0])
    draws = {tuple(resample(pts, 4, torch.Generator().manual_seed(s))[0][:, 0].tolist()) for s in range(8)}
    assert len(draws) > 1  # the generator decides
    with pytest.raises(ValueError, match="empty"):
        resample(pts[:0], 4)


def test_prepare_points():
    rng = np.random.default_rng(4)
    xyz = rng.normal(size=(2048, 3)) * 5 + 3
    cloud, r = prepare_points(xyz, npoints=2048)  # ScanObjectNN: 2,048 points, no colour
    assert r is False and cloud.shape == (2048, 6) and cloud.dtype == torch.float32
    np.testing.assert_allclose(cloud[:, :3].numpy(), pc_norm(torch.from_numpy(xyz)).numpy(), atol=1e-6)
    assert torch.all(cloud[:, 3:] == torch.tensor(0.4, dtype=torch.float32))  # Uni3D's grey
    rgb = rng.random((2048, 3))
    up, r = prepare_points(xyz, rgb, npoints=10000, generator=torch.Generator().manual_seed(0))
    assert r is True and up.shape == (10000, 6)
    np.testing.assert_allclose(up[:2048, 3:].numpy(), rgb, atol=1e-6)
    kept, r = prepare_points(torch.from_numpy(xyz), npoints=None)
    assert r is False and kept.shape == (2048, 6)
    with pytest.raises(ValueError, match=r"rgb must be in \[0, 1\].*255"):
        prepare_points(xyz, rgb * 255)
    with pytest.raises(ValueError, match="rgb has 10 points, xyz has 2048"):
        prepare_points(xyz, rgb[:10])
    with pytest.raises(ValueError, match=r"xyz must be \(N, 3\)"):
        prepare_points(xyz[:, :2])
    bad = xyz.copy()
    bad[7, 1] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        prepare_points(bad)


# ---------------------------------------------------------------------------------------------
# the encoder


def expected_params(cfg) -> int:
    """Parameters of Uni3D's point encoder from its architecture: the mini-PointNet (Conv1d
    weights + biases, BN weight + bias), the two bridges, CLS token + position, the position
    MLP, and the timm model's blocks + norm + fc_norm counted by timm itself."""
    w, c, e = cfg.width, cfg.pc_encoder_dim, cfg.embed_dim
    pointnet = (6 * 128 + 128) + 2 * 128 + (128 * 256 + 256) + (512 * 512 + 512) + 2 * 512 + (512 * c + c)
    bridges = (c * w + w) + (w * e + e)
    cls = 2 * w
    pos_mlp = (3 * 128 + 128) + (128 * w + w)
    with torch.device("meta"):
        vit = timm.create_model(cfg.timm_model, pretrained=False)
    trunk = sum(p.numel() for n, p in vit.named_parameters() if n.split(".")[0] in ("blocks", "norm", "fc_norm"))
    assert vit.embed_dim == cfg.width and len(vit.blocks) == cfg.depth
    return pointnet + bridges + cls + pos_mlp + trunk


@pytest.mark.parametrize("size", list(UNI3D_SIZES))
def test_parameter_counts_and_output_shape_on_meta(size):
    cfg = uni3d_config(size, num_group=8, group_size=4)  # fewer patches: same parameters, quicker forward
    with torch.device("meta"):
        model = Uni3DPointEncoder(cfg)
        out = model.encode_points(torch.empty(3, 100, 6))
    assert all(p.is_meta for p in model.parameters())
    assert sum(p.numel() for p in model.parameters()) == expected_params(cfg)
    assert out.shape == (3, 1024)


def test_block_counts_by_hand():
    # The two block kinds Uni3D's big models use, counted without timm: EVA-01 giant (fused qkv
    # with q/v biases, GELU MLP 6144) and EVA-02 base (q/k/v, k without bias, SwiGLU 2048 + LN).
    W, H = 1408, 6144
    giant_block = 2 * W + 3 * W * W + 2 * W + (W * W + W) + 2 * W + (W * H + H) + (H * W + W)
    W2, H2 = 768, 2048
    base_block = 2 * W2 + (W2 * W2 + W2) + W2 * W2 + (W2 * W2 + W2) + (W2 * W2 + W2) + 2 * W2 \
        + 2 * (W2 * H2 + H2) + 2 * H2 + (H2 * W2 + W2)
    with torch.device("meta"):
        giant = Uni3DPointEncoder(uni3d_config("giant"))
        base = Uni3DPointEncoder(uni3d_config("base"))
    for m, block, depth, w in ((giant, giant_block, 40, W), (base, base_block, 12, W2)):
        assert sum(p.numel() for p in m.visual.parameters()) == depth * block + 2 * w  # + fc_norm
    # the rest of Uni3D-b: PointNet (3 convs + BN, 1 conv), bridges, CLS token + position, position MLP
    rest = (6 * 128 + 128) + 2 * 128 + (128 * 256 + 256) + (512 * 512 + 512) + 2 * 512 + (512 * 512 + 512) \
        + (512 * 768 + 768) + (768 * 1024 + 1024) + 2 * 768 + (3 * 128 + 128) + (128 * 768 + 768)
    assert sum(p.numel() for p in base.parameters()) == 12 * base_block + 2 * W2 + rest
    assert sum(p.numel() for p in giant.parameters()) > 10**9  # the "one billion" of Uni3D-g


def test_encode_points_shapes_and_input_checks():
    torch.manual_seed(0)
    model = Uni3DPointEncoder(SMALL["tiny"])
    clouds = torch.from_numpy(random_clouds(2, 200))
    centres, patches = model.group(clouds[..., :3], clouds[..., 3:])
    assert centres.shape == (2, 32, 3) and patches.shape == (2, 32, 16, 6)
    with torch.no_grad():
        out = model.encode_points(clouds)
        xyz_only = model.encode_points(clouds[..., :3])  # colour: constant 0.4
        grey = model.encode_points(torch.cat([clouds[..., :3], torch.full_like(clouds[..., :3], NO_COLOUR)], -1))
    assert out.shape == (2, 48)
    assert torch.equal(xyz_only, grey) and not torch.allclose(out, grey)
    with pytest.raises(ValueError, match="200 points is too small.*at least 512"):
        Uni3DPointEncoder(uni3d_config("tiny", depth=1)).encode_points(clouds)
    with pytest.raises(ValueError, match=r"\(B, N, 6\)"):
        model.encode_points(clouds[0])


# ---------------------------------------------------------------------------------------------
# checkpoints


def test_unused_timm_keys_are_exactly_what_uni3d_does_not_run():
    for size in UNI3D_SIZES:
        with torch.device("meta"):
            full = timm.create_model(UNI3D_SIZES[size].timm_model, pretrained=False, num_classes=1000)
        top = {k.split(".")[0] for k in full.state_dict()}
        assert top - {"blocks", "norm", "fc_norm"} == set(UNUSED_TIMM_KEYS), size


@pytest.mark.parametrize("size", list(UNI3D_SIZES))
def test_every_released_layout_loads_strictly_on_meta(size):
    # Uni3D builds timm.create_model(<name>.<tag>): tiny/small tags have no classifier, the others
    # 1000 classes; the checkpoint holds that whole model. Shapes only: all on meta.
    cfg = uni3d_config(size)
    with torch.device("meta"):
        full = timm.create_model(cfg.timm_model, pretrained=False, num_classes=0 if size in ("tiny", "small") else 1000)
        sd = {f"point_encoder.visual.{k}": v for k, v in full.state_dict().items()}
        sd |= {f"point_encoder.{k}": torch.empty(s) for k, s in encoder_shapes(cfg).items()}
        sd["logit_scale"] = torch.empty(())
        model = Uni3DPointEncoder(cfg)
    report = load_uni3d_checkpoint({"module": sd}, model)
    assert report.n_loaded == len(model.state_dict())
    assert "logit_scale" in report.ignored and "point_encoder.visual.pos_embed" in report.ignored


@pytest.mark.parametrize("kind", list(SMALL))
def test_checkpoint_loads_strictly_and_matches_reference_forward(kind, tmp_path):
    cfg = SMALL[kind]
    ckpt = uni3d_checkpoint(cfg, seed=1, classes=1000)
    path = tmp_path / "model.pt"
    torch.save(ckpt, path)
    clouds = random_clouds(2, 200, seed=5)
    outs = []
    for init_seed in (0, 1):  # two differently initialised models: the weights all come from the file
        torch.manual_seed(init_seed)
        model = Uni3DPointEncoder(cfg)
        report = load_uni3d_checkpoint(path, model)
        assert report.n_loaded == len(model.state_dict()) and report.stored_dtypes["float16"] > 0
        with torch.no_grad():
            outs.append(model.encode_points(torch.from_numpy(clouds)))
    assert torch.equal(outs[0], outs[1])
    with torch.no_grad():
        assert torch.equal(model.encode_points(torch.from_numpy(clouds)), outs[0])
    want = forward_reference(ckpt["module"], cfg, clouds)
    torch.testing.assert_close(outs[0], want, atol=2e-4, rtol=1e-4)
    assert outs[0].abs().max() > 0.1  # not a degenerate output


def test_module_prefix_meta_model_and_bare_state_dict():
    cfg = SMALL["tiny"]
    ckpt = uni3d_checkpoint(cfg, seed=2, classes=0)
    clouds = torch.from_numpy(random_clouds(1, 200, seed=6))
    ref_model = Uni3DPointEncoder(cfg)
    load_uni3d_checkpoint(ckpt, ref_model)
    with torch.no_grad():
        want = ref_model.encode_points(clouds)
    # DataParallel/DeepSpeed's "module." prefix, stripped as Uni3D's loader does
    prefixed = {"module": {f"module.{k}": v for k, v in ckpt["module"].items()}}
    m2 = Uni3DPointEncoder(cfg)
    load_uni3d_checkpoint(prefixed, m2)
    # a meta model takes the tensors by assignment; timm's non-persistent k_bias is made after
    with torch.device("meta"):
        m3 = Uni3DPointEncoder(cfg)
    assert load_uni3d_checkpoint(ckpt, m3).assigned
    assert not any(t.is_meta for t in [*m3.parameters(), *m3.buffers()])
    # this encoder's own state dict (no point_encoder. prefix) loads too
    m4 = Uni3DPointEncoder(cfg)
    load_uni3d_checkpoint(ref_model.state_dict(), m4)
    with torch.no_grad():
        for m in (m2, m3, m4):
            assert torch.equal(m.encode_points(clouds), want)


def test_another_width_fails_with_one_line_naming_keys_and_shapes(tmp_path):
    cfg = SMALL["tiny"]
    wider = uni3d_checkpoint(uni3d_config("tiny", width=96, depth=2, heads=2, embed_dim=48), seed=3)
    path = tmp_path / "wide.pt"
    torch.save(wider, path)
    with pytest.raises(CheckpointError) as e:
        load_uni3d_checkpoint(path, Uni3DPointEncoder(cfg))
    line = e.value.one_line
    assert "\n" not in line and str(path) in line and "Uni3D-tiny" in line
    assert re.search(r"mismatched \S+ .*checkpoint \[\d+(, \d+)*\] vs model \[\d+(, \d+)*\]", line)
    assert "width is 96" in line and "model's 64" in line
    # a released size's layout names that size
    with torch.device("meta"):
        small = {f"point_encoder.{k}": torch.empty(s) for k, s in encoder_shapes(uni3d_config("small")).items()}
        tiny = Uni3DPointEncoder(uni3d_config("tiny"))
    with pytest.raises(CheckpointError, match="width is 384 .*Uni3D-small.*model's 192 \\(Uni3D-tiny\\)"):
        load_uni3d_checkpoint(small, tiny)


def test_missing_and_unexpected_keys_are_named():
    cfg = SMALL["tiny"]
    ckpt = uni3d_checkpoint(cfg, seed=4)
    sd = dict(ckpt["module"])
    del sd["point_encoder.cls_pos"]
    with pytest.raises(CheckpointError, match=r"1 missing keys") as e:
        load_uni3d_checkpoint(sd, Uni3DPointEncoder(cfg))
    assert re.search(r"1 missing keys \(missing cls_pos\)$", e.value.one_line)
    sd = dict(ckpt["module"])
    sd["point_encoder.visual.blocks.0.attn.extra"] = torch.zeros(3)
    sd["text_proj.weight"] = torch.zeros(3)
    with pytest.raises(CheckpointError, match=r"2 unexpected keys") as e:
        load_uni3d_checkpoint(sd, Uni3DPointEncoder(cfg))
    assert "visual.blocks.0.attn.extra" in str(e.value) and "text_proj.weight" in str(e.value)
    with pytest.raises(CheckpointError, match="checkpoint file not found"):
        load_uni3d_checkpoint("/nonexistent/uni3d/model.pt", Uni3DPointEncoder(cfg))
