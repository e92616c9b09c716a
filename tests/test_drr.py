"""DRRs of the shipped chest CT: exact truth, the physics the renderer claims, reproducibility, and a
researcher's own CT refused in one line when it is not one."""
import dataclasses

import nibabel as nib
import numpy as np
import pytest
import torch

from cxr_workbench.imaging import ct, ct_dicom, drr, sources
from cxr_workbench.imaging.datasets import TruthDataset
from cxr_workbench.imaging.diseases import DISEASES

PA = drr.DRRParams(elastic=0.0)


@pytest.fixture(scope="module")
def model():
    return drr.slab_model_for(64)


def ctr(params, model, size=64):
    return drr.render_batch(params, size, model=model)[1]["ctr"]


def test_shipped_ct_is_read_as_a_chest(model):
    hu, lab, voxel = ct.load_ct(*ct.ct_files())
    assert voxel == pytest.approx((0.703125, 0.703125, 2.5))
    # the contrast-enhanced blood pool (median 331 HU in the heart label) is soft tissue once cleaned
    assert np.median(hu[lab == 51]) > 250 and np.median(ct._clean(hu, lab)[lab == 51]) == 40
    assert model.maps.shape[:2] == (len(ct.CHANNELS), ct.SLABS)
    # the lungs are the least attenuating part of the chest: lung slabs hold lung, lung attenuation is low
    lung = model.maps[ct.CHANNELS.index("lung")].sum(0)
    assert lung.max() > 0.9 * ct.SLABS * 0.5 and model.lobe_points[:, 0].unique().tolist() == [0, 1, 2, 3, 4]


def test_ctr_grows_with_the_heart_and_magnifies_on_ap(model):
    scales = [0.75, 0.9, 1.0, 1.15, 1.3]
    pa = ctr([dataclasses.replace(PA, heart=s) for s in scales], model)
    assert np.all(np.diff(pa) > 0.02), pa
    assert pa[2] == pytest.approx(0.52, abs=0.03)  # the CT's own heart
    # AP: the heart, in front, is farther from the detector than the ribs' widest point is on average
    ap = ctr([dataclasses.replace(PA, ap=1.0, sid=1000.0)], model)[0]
    assert ap > pa[2] + 0.005
    # habitus scales heart and thorax alike; the CTR is a ratio
    wide = ctr([dataclasses.replace(PA, scale_x=1.1)], model)[0]
    assert wide == pytest.approx(pa[2], abs=0.015)
    # the same measurement at 128 px
    assert ctr([PA], drr.slab_model_for(128), 128)[0] == pytest.approx(pa[2], abs=0.02)


def test_tissue_replaces_lung_where_the_heart_grows(model):
    P = drr._stack([PA, dataclasses.replace(PA, heart=1.3)])
    slabs = drr._slabs(model, P, [PA, PA])
    lung, heart = slabs[:, :, 1].sum((1, 2, 3)), slabs[:, :, 2].sum((1, 2, 3))
    lost, gained = lung[0] - lung[1], heart[1] - heart[0]
    assert lost > 0 and gained > lost  # lung lost, never more than the heart gained (some replaces mediastinum)
    # and the film darkens less there: more attenuation along the rays through the grown heart
    assert slabs[1, :, 0].sum() > slabs[0, :, 0].sum()


def test_opacity_burden_and_lobe_are_exact(model):
    def with_blob(radius, lobe=4):
        return dataclasses.replace(PA, opacities=(drr.Opacity(lobe=lobe, seed_point=0.5, radius=radius,
                                                               density=0.8),))
    imgs, t = drr.render_batch([PA, with_blob(15), with_blob(30), with_blob(30, lobe=0)], 64, model=model)
    assert t["opacity_burden"][0] == 0 and 0 < t["opacity_burden"][1] < t["opacity_burden"][2] < 0.5
    assert t["zone"].tolist() == [-1, 4, 4, 0] and t["opacity"].tolist() == [False, True, True, True]
    # the opacity whitens its lung; the lobes are on their own sides (right lower: image left)
    diff = imgs[2] - imgs[0]
    assert diff[:, :32].sum() > 5 * max(diff[:, 32:].sum(), 1e-3)
    # confined to its lobe: nothing of a right-lower-lobe blob lies where that lobe is absent
    box, occ = drr._blob(model, with_blob(30).opacities[0])
    assert torch.all(occ[model.maps[drr._LOBE0 + 4][box] == 0] == 0)


def test_rendering_is_reproducible_and_independent_of_the_batch(model):
    rng = np.random.default_rng(5)
    params = [drr.sample_params(rng, k) for k in ("normal", "cardiomegaly", "opacity", "opacity")]
    batch, truth = drr.render_batch(params, 64, model=model)
    again, _ = drr.render_batch(params, 64, model=model)
    np.testing.assert_array_equal(batch, again)
    for i, p in enumerate(params):
        alone, t = drr.render(p, 64, model=model)
        # equal but for the detector blur's kernel, cut at 3 sigma of the batch's widest blur
        np.testing.assert_allclose(alone, batch[i], atol=1e-4)
        assert t["ctr"] == pytest.approx(truth["ctr"][i], abs=1e-5)
    assert batch.dtype == np.float32 and batch.min() >= 0 and batch.max() <= 1
    # a new noise seed changes the noise, not the anatomy
    other, t2 = drr.render(dataclasses.replace(params[0], noise_seed=params[0].noise_seed + 7), 64, model=model)
    assert 0 < np.abs(other - batch[0]).mean() < 0.05 and t2["ctr"] == pytest.approx(truth["ctr"][0], abs=1e-6)


def test_devices_are_drawn_and_recorded(model):
    plain, _ = drr.render(PA, 64, model=model)
    for device in drr.DEVICES:
        img, t = drr.render(dataclasses.replace(PA, devices=(device,)), 64, model=model)
        assert t[device] and not any(t[d] for d in drr.DEVICES if d != device)
        assert np.abs(img - plain).max() > 0.05, device  # 13 grey levels of 256, over the mediastinum too


def test_dataset_of_drrs_labels_follow_the_truth():
    d = TruthDataset(36, 64, seed=2, source="drr")
    assert set(d.kind) == {"normal", "cardiomegaly", "opacity"}
    for i in range(len(d)):
        assert (d.burden[i] > DISEASES["opacity"].threshold) == (d.kind[i] == "opacity")
    np.testing.assert_array_equal(d.images, TruthDataset(36, 64, seed=2, source="drr").images)


@pytest.mark.parametrize("bad, message", [
    (dict(heart=2.0), "heart=2.0"), (dict(sid=100.0), "sid=100.0"),
    (dict(devices=("pacemaker",)), "pacemaker"),
    (dict(opacities=(drr.Opacity(lobe=7, seed_point=0.5, radius=10, density=0.5),)), "lobe 0-4"),
])
def test_bad_parameters_are_refused_by_name(bad, message):
    with pytest.raises(ValueError, match=message):
        drr.render_batch([dataclasses.replace(PA, **bad)], 64)


def test_sources_by_name():
    with pytest.raises(ValueError, match="source='xray'"):
        sources.check_source("xray")
    with pytest.raises(ValueError, match="--source drr"):
        sources.check_source("phantom", ct="my_ct")


# --------------------------------------------------------------------------------------------
# A researcher's own CT (--ct DIR)
# --------------------------------------------------------------------------------------------

def synthetic_ct(shape=(48, 40, 36)):
    """A tiny chest: a body cylinder of soft tissue, two lungs, a heart, a spine (HU and labels)."""
    x, y, z = np.meshgrid(*(np.arange(n, dtype=np.float32) for n in shape), indexing="ij")
    cx, cy = shape[0] / 2, shape[1] / 2
    hu = np.full(shape, -1000, np.float32)
    lab = np.zeros(shape, np.uint8)
    body = ((x - cx) / 20) ** 2 + ((y - cy) / 15) ** 2 < 1
    hu[body] = 40
    for label, side in ((14, -1), (11, 1)):
        lung = ((x - cx - side * 9) / 7) ** 2 + ((y - cy) / 10) ** 2 + ((z - 18) / 14) ** 2 < 1
        hu[lung], lab[lung] = -850, label
    heart = ((x - cx - 2) / 5) ** 2 + ((y - cy - 4) / 5) ** 2 + ((z - 12) / 5) ** 2 < 1
    hu[heart], lab[heart] = 300, 51  # contrast-enhanced, as the shipped CT
    spine = ((x - cx) / 2.5) ** 2 + ((y - cy + 10) / 2.5) ** 2 < 1
    hu[spine], lab[spine] = 700, 36
    return hu, lab


def write_ct(folder, hu, lab, label_affine=None, name="mask.nii.gz"):
    folder.mkdir(exist_ok=True)
    affine = np.diag([-4.0, 4.0, 5.0, 1.0])  # LAS, 4 x 4 x 5 mm
    nib.save(nib.Nifti1Image(hu, affine), folder / "ct.nii.gz")
    nib.save(nib.Nifti1Image(lab, affine if label_affine is None else label_affine), folder / name)
    return folder


def test_own_ct_renders_with_its_own_truth(tmp_path):
    hu, lab = synthetic_ct()
    folder = write_ct(tmp_path / "ct", hu, lab)
    model = ct.default_slab_model(folder, spacing=4.0)
    imgs, t = drr.render_batch([PA, dataclasses.replace(PA, heart=1.3)], 64, model=model)
    # heart 10 voxels (40 mm) wide in lungs spanning 32 voxels (128 mm) at the heart's widest: CTR ~ 0.3
    assert 0.2 < t["ctr"][0] < 0.42 and t["ctr"][1] > t["ctr"][0] * 1.2
    assert np.isfinite(imgs).all() and imgs.std() > 0.05
    # reduced once: the second call reads the cache
    assert ct.default_slab_model(folder, spacing=4.0).maps.shape == model.maps.shape


@pytest.mark.parametrize("damage, message", [
    ("nan", "NaN or infinite"),
    ("not_ct", "expected a CT in Hounsfield units"),
    ("other_grid", "does not match the volume"),
    ("no_heart", "no heart"),
    ("two_volumes", r"expected one NIfTI volume \(or a DICOM series\) and one labelmap"),
    ("not_nifti", "not a readable NIfTI"),
])
def test_own_ct_refused_in_one_line_naming_the_file(tmp_path, damage, message):
    hu, lab = synthetic_ct()
    affine = None
    if damage == "nan":
        hu[3, 3, 3] = np.nan
    elif damage == "not_ct":
        hu = (hu + 1000) / 4000  # an image in [0, 1], not HU
    elif damage == "other_grid":
        affine = np.diag([-4.0, 4.0, 2.5, 1.0])
    elif damage == "no_heart":
        lab[lab == 51] = 0
    folder = write_ct(tmp_path / "ct", hu, lab, label_affine=affine)
    if damage == "two_volumes":
        (folder / "other.nii.gz").write_bytes((folder / "ct.nii.gz").read_bytes())
    if damage == "not_nifti":
        (folder / "ct.nii.gz").write_bytes(b"not a volume")
    with pytest.raises(ValueError, match=message) as err:
        ct.load_ct(*ct.ct_files(folder))
    assert "\n" not in str(err.value) and str(folder) in str(err.value)


def write_dicom_ct(folder, hu, lab):
    """The synthetic CT as a scanner's DICOM series, and its labelmap as dcm2niix and TotalSegmentator
    store one: rows flipped, the affine saying so."""
    affine = np.diag([-4.0, 4.0, 5.0, 1.0])
    ct_dicom.save_series(folder / "series", hu, affine)
    flip = affine @ np.array([[1, 0, 0, 0], [0, -1, 0, lab.shape[1] - 1], [0, 0, 1, 0], [0, 0, 0, 1.0]])
    nib.save(nib.Nifti1Image(lab[:, ::-1].copy(), flip), folder / "mask.nii.gz")
    return folder


def test_own_ct_as_a_dicom_series_reads_as_its_nifti(tmp_path):
    hu, lab = synthetic_ct()
    nifti = ct.load_ct(*ct.ct_files(write_ct(tmp_path / "nifti", hu, lab)))
    folder = write_dicom_ct(tmp_path / "dicom", hu, lab)
    assert ct.ct_files(folder) == (folder, folder / "mask.nii.gz")
    dicom = ct.load_ct(*ct.ct_files(folder))
    np.testing.assert_array_equal(dicom[0], nifti[0])
    np.testing.assert_array_equal(dicom[1], nifti[1])
    np.testing.assert_allclose(dicom[2], nifti[2], atol=1e-4)
    imgs, t = drr.render_batch([PA], 64, model=ct.default_slab_model(folder, spacing=4.0))
    assert 0.2 < t["ctr"][0] < 0.42 and np.isfinite(imgs).all()
    # an end slice that is no longer DICOM (its first bytes lost) is named, and the labelmap refused
    first = folder / "series" / "slice0000.dcm"
    first.write_bytes(bytes(200) + first.read_bytes()[200:])
    with pytest.warns(UserWarning, match="1 files that are not DICOM passed over .first slice0000.dcm."), \
            pytest.raises(ValueError, match=r"of shape \(48, 40, 35\)"):
        ct.load_ct(*ct.ct_files(folder))


@pytest.mark.parametrize("damage, message", [
    ("missing_slice", "slice gaps from 5 to 10 mm"),
    ("two_series", "DICOM files of 2 series"),
    ("not_ct", "DICOM modality 'MR'; expected 'CT'"),
    ("no_position", "ImagePositionPatient missing"),
    ("other_size", "a slice of another size or orientation"),
    ("no_pixels", "DICOM pixel data cannot be read"),
    ("unknown_vr", "slice0010.dcm: not a readable DICOM file .Unknown Value Representation"),
    ("labels_of_another_grid", "does not match the volume"),
])
def test_own_dicom_ct_refused_in_one_line_naming_the_file(tmp_path, damage, message):
    import pydicom
    hu, lab = synthetic_ct()
    folder = write_dicom_ct(tmp_path / "ct", hu, lab)
    victim = folder / "series" / "slice0010.dcm"
    ds = pydicom.dcmread(victim)
    if damage == "missing_slice":
        victim.unlink()
    elif damage == "two_series":
        ds.SeriesInstanceUID = pydicom.uid.generate_uid()
    elif damage == "not_ct":
        ds.Modality = "MR"
    elif damage == "no_position":
        del ds.ImagePositionPatient
    elif damage == "other_size":
        ds.Rows = ds.Rows - 1
    elif damage == "no_pixels":
        del ds.PixelData
    elif damage == "labels_of_another_grid":
        nib.save(nib.Nifti1Image(lab, np.diag([-4.0, 4.0, 2.5, 1.0])), folder / "mask.nii.gz")
    if victim.exists() and damage != "unknown_vr":
        ds.save_as(victim)
    if damage == "unknown_vr":  # the Modality element's VR bytes damaged: pydicom fails on first access
        data = victim.read_bytes()
        victim.write_bytes(data.replace(b"\x08\x00\x60\x00CS", b"\x08\x00\x60\x00C\x00", 1))
    with pytest.raises(ValueError, match=message) as err:
        ct.load_ct(*ct.ct_files(folder))
    assert "\n" not in str(err.value) and str(folder) in str(err.value)


def test_missing_ct_folder_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        ct.ct_files(tmp_path / "nowhere")


def test_kinds_grid_of_drrs():
    grid, truths = sources.kinds_grid("drr", per_kind=2, size=32)
    assert grid.shape == (3 * 32, 2 * 32) and 0 <= grid.min() and grid.max() <= 1
    assert all(t["cardiomegaly"] for t in truths[1]) and all(t["opacity"] for t in truths[2])
