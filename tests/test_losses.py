import math

import pytest
import torch

from cxr_workbench.imaging.masks import Box, box_masks
from cxr_workbench.method.losses import angle_loss, image_loss, spring_loss, ssim_map, target_schedule

BOX = Box(4, 4, 12, 12, resolution=16)
MASK = box_masks(BOX, 1, 16)  # [1, 1, 16, 16]


def edited(d_in, d_out, n=3):
    """Reference zeros; point i differs by d_in[i] inside the box and d_out[i] outside."""
    ref = torch.zeros(1, 1, 16, 16)
    m = BOX.mask()
    x = torch.stack([d_in[i] * m + d_out[i] * (1 - m) for i in range(n)])[None, :, None]
    return ref, x


def test_image_loss_known_answers():
    ref, x = edited([0.1, 0.2, 0.3], [0.0, 0.05, 0.0])
    c = target_schedule(0.3, 3)  # 0.1, 0.2, 0.3
    torch.testing.assert_close(c, torch.tensor([0.1, 0.2, 0.3]))
    l1 = image_loss(ref, x, MASK, c, "l1")
    torch.testing.assert_close(l1, torch.tensor([[0.0, 0.05, 0.0]]), atol=1e-6, rtol=0)
    l2 = image_loss(ref, x, MASK, torch.tensor([0.0, 0.0, 0.0]), "l2")
    torch.testing.assert_close(l2, torch.tensor([[0.01, 0.04 + 0.0025, 0.09]]), atol=1e-6, rtol=0)
    const = image_loss(ref, x, MASK, target_schedule(0.3, 3, "constant"), "l1")
    torch.testing.assert_close(const, torch.tensor([[0.2, 0.15, 0.0]]), atol=1e-6, rtol=0)


def test_ssim_distance():
    torch.manual_seed(0)
    a = torch.rand(2, 1, 16, 16) * 2 - 1
    torch.testing.assert_close(ssim_map(a, a), torch.ones(2, 16, 16), atol=1e-5, rtol=0)
    ref = a[:1]
    same = image_loss(ref, a[:1, None].repeat(1, 2, 1, 1, 1), MASK, torch.zeros(2), "ssim")
    torch.testing.assert_close(same, torch.zeros(1, 2), atol=1e-5, rtol=0)
    noisy = a[:1, None] + 0.5 * torch.randn(1, 1, 1, 16, 16)
    assert image_loss(ref, noisy, MASK, torch.zeros(1), "ssim").item() > 0.1


def test_image_loss_gradients_batched():
    ref = torch.zeros(3, 1, 16, 16)
    x = torch.randn(3, 4, 1, 16, 16, requires_grad=True)
    loss = image_loss(ref, x, MASK, target_schedule(0.1, 4))
    assert loss.shape == (3, 4)
    loss.sum().backward()
    assert torch.isfinite(x.grad).all() and (x.grad != 0).any()


def test_spring_known_answer():
    # points on a line with spacing 0.5, rest length 0.3
    pts = (torch.arange(5.0)[:, None] * 0.5 * torch.tensor([0.6, 0.8]))[None]
    assert spring_loss(pts, 1, 0.3).item() == pytest.approx(4 * 0.2 ** 2)
    assert spring_loss(pts, 2, 0.3).item() == pytest.approx(3 * 0.4 ** 2)
    assert spring_loss(pts, 1, 0.5).item() == pytest.approx(0.0, abs=1e-10)


def test_angle_known_answers():
    ref = torch.zeros(1, 2)
    u = torch.tensor([1.0, 0.0])
    pts = torch.tensor([[[1.0, 0.0], [1.0, 1.0], [0.0, 2.0], [-3.0, 0.0]]])  # 0, 45, 90, 180 degrees
    angles = torch.tensor([0.0, 45.0, 90.0, 180.0]).deg2rad()
    theta = math.radians(35)
    hinge = angle_loss(pts, ref, u, theta)
    assert hinge.item() == pytest.approx((angles - theta).clamp_min(0).mean().item(), abs=1e-3)
    literal = angle_loss(pts, ref, u, theta, form="literal")
    assert literal.item() == pytest.approx(angles.mean().item() - theta, abs=1e-3)
    inside = torch.tensor([[[1.0, 0.2], [2.0, -0.3]]])  # both within 35 degrees
    assert angle_loss(inside, ref, u, theta).item() == 0.0
    p = pts.clone().requires_grad_(True)
    angle_loss(p, ref, u, theta).backward()
    assert torch.isfinite(p.grad).all()
    with pytest.raises(ValueError, match="form='cosine'"):
        angle_loss(pts, ref, u, theta, form="cosine")


def test_image_loss_takes_a_box_per_reference():
    torch.manual_seed(0)
    ref, x = torch.randn(3, 1, 16, 16), torch.randn(3, 4, 1, 16, 16)
    boxes = [Box(0, 0, 8, 8, 16), Box(4, 6, 14, 10, 16), Box(10, 2, 16, 16, 16)]
    c = target_schedule(0.3, 4)
    each = image_loss(ref, x, box_masks(boxes, 3, 16), c)
    for r, b in enumerate(boxes):  # the same as each reference alone with its box
        torch.testing.assert_close(each[r:r + 1], image_loss(ref[r:r + 1], x[r:r + 1], box_masks(b, 1, 16), c))
    torch.testing.assert_close(image_loss(ref, x, box_masks(boxes[:1] * 3, 3, 16), c),
                               image_loss(ref, x, box_masks(boxes[0], 3, 16), c))
    with pytest.raises(ValueError, match="2 boxes for 3 references"):
        box_masks(boxes[:2], 3, 16)
    with pytest.raises(ValueError, match="box is for 16 px but the images are 32 px"):
        box_masks(boxes, 3, 32)
