"""Images of every Pillow mode real datasets contain decode to the picture a person sees, or are
refused by name (cirbench/data/decode.py). Every expected pixel is computed by hand in a
comment."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

import cirbench
from cirbench.data import (
    CorruptImageError,
    DataLocations,
    ImageTransform,
    LocalImageDataset,
    Query,
    UnsupportedImageModeError,
    decode_image,
    display_rgb,
)
from cirbench.data.model_inputs import IMAGENET_MEAN, IMAGENET_STD
from cirbench.data.verify import verify_dataset
from cirbench.evaluate import evaluate
from tests.fixtures.protocols import SMOKE
from tests.fixtures.local_data import write_mit_states
from tests.fixtures.data_reading import REGISTRY
from tests.fixtures.data_reading import _quiet  # noqa: F401  (pytest fixtures)


def pixel(path: Path) -> tuple[int, int, int]:
    """The top-left pixel ``decode_image`` gives."""
    return tuple(int(v) for v in decode_image(path)[0, 0])


def saved(img: Image.Image, path: Path, **params) -> Path:
    """Save ``img`` and check the file really opens in the mode under test."""
    img.save(path, **params)
    with Image.open(path) as back:
        assert back.mode == img.mode or (img.mode, back.mode) == ("I;16L", "I;16"), (img.mode, back.mode)
    return path


# --- image modes: as displayed -------------------------------------------------------------------------------
def test_mode_1_png(tmp_path):
    img = Image.new("1", (3, 2), 0)
    img.putpixel((1, 0), 255)
    path = saved(img, tmp_path / "bw.png")
    out = decode_image(path)
    assert tuple(out[0, 0]) == (0, 0, 0) and tuple(out[0, 1]) == (255, 255, 255)  # bit 0 black, 1 white


def test_mode_l_png(tmp_path):
    assert pixel(saved(Image.new("L", (2, 2), 77), tmp_path / "g.png")) == (77, 77, 77)  # grey 77 on every channel


def test_mode_p_gif_looks_up_the_palette(tmp_path):
    img = Image.new("P", (2, 2), 1)
    img.putpalette([0, 0, 0, 200, 10, 20])
    assert pixel(saved(img, tmp_path / "p.gif")) == (200, 10, 20)  # index 1 -> palette entry 1


def test_mode_rgb_png_and_tiff(tmp_path):
    img = Image.new("RGB", (2, 2), (1, 2, 3))
    assert pixel(saved(img, tmp_path / "c.png")) == (1, 2, 3)
    assert pixel(saved(img, tmp_path / "c.tif")) == (1, 2, 3)


def test_mode_cmyk_tiff_and_jpeg(tmp_path):
    img = Image.new("CMYK", (8, 8), (100, 50, 0, 64))
    # R = (255 - C)(255 - K)/255 = 155 * 191 / 255 = 116.10 -> 116; G = 205 * 191 / 255 = 153.55 -> 154;
    # B = 255 * 191 / 255 = 191
    assert pixel(saved(img, tmp_path / "k.tif")) == (116, 154, 191)
    # a CMYK JPEG (what print shops deliver); JPEG is lossy, so within 2 of the same value
    got = pixel(saved(img, tmp_path / "k.jpg", quality=100))
    assert max(abs(a - b) for a, b in zip(got, (116, 154, 191))) <= 2, got


def test_mode_ycbcr_tiff(tmp_path):
    path = saved(Image.new("YCbCr", (2, 2), (100, 128, 200)), tmp_path / "y.tif")
    # JFIF: R = Y + 1.402 (Cr - 128) = 100 + 100.94 = 200.94; G = Y - 0.344136 (Cb - 128)
    # - 0.714136 (Cr - 128) = 100 - 51.42 = 48.58; B = Y + 1.772 (Cb - 128) = 100.
    # Pillow's fixed-point conversion truncates: within 1 of the exact values.
    got = pixel(path)
    assert all(abs(g - w) <= 1 for g, w in zip(got, (200.94, 48.58, 100))), got


# --- image modes: transparency over white ---------------------------------------------------------------------
# composite over white: round((c * a + 255 * (255 - a)) / 255); with a = 128:
#   c = 200: (25600 + 32385) / 255 = 227.39 -> 227;  c = 10: (1280 + 32385) / 255 = 132.02 -> 132;
#   c = 20: (2560 + 32385) / 255 = 137.04 -> 137;    c = 0: 32385 / 255 = 127
HALF_RED_OVER_WHITE = (227, 132, 137)


def test_mode_rgba_png(tmp_path):
    img = Image.new("RGBA", (3, 1), (200, 10, 20, 128))
    img.putpixel((1, 0), (0, 0, 0, 0))  # fully transparent black: the page, white
    img.putpixel((2, 0), (9, 8, 7, 255))  # opaque: itself
    out = decode_image(saved(img, tmp_path / "a.png"))
    assert [tuple(int(v) for v in out[0, i]) for i in range(3)] == [HALF_RED_OVER_WHITE, (255,) * 3, (9, 8, 7)]


def test_mode_la_png(tmp_path):
    img = Image.new("LA", (2, 1), (0, 128))
    img.putpixel((1, 0), (100, 255))
    out = decode_image(saved(img, tmp_path / "la.png"))
    assert tuple(out[0, 0]) == (127, 127, 127) and tuple(out[0, 1]) == (100, 100, 100)  # 32385/255; opaque


def test_mode_pa_tiff(tmp_path):
    img = Image.new("PA", (2, 2), (1, 128))
    img.putpalette([0, 0, 0, 200, 10, 20])
    assert pixel(saved(img, tmp_path / "pa.tif")) == HALF_RED_OVER_WHITE


def test_mode_p_with_transparency_png(tmp_path):
    img = Image.new("P", (2, 1), 1)
    img.putpalette([0, 0, 0, 200, 10, 20])
    img.putpixel((1, 0), 0)
    path = saved(img, tmp_path / "pt.png", transparency=bytes([0, 128]))  # tRNS: entry 0 clear, entry 1 half
    out = decode_image(path)
    assert tuple(out[0, 0]) == HALF_RED_OVER_WHITE and tuple(out[0, 1]) == (255, 255, 255)


def test_mode_l_with_transparency_key_png(tmp_path):
    img = Image.new("L", (2, 1), 40)
    img.putpixel((1, 0), 90)
    out = decode_image(saved(img, tmp_path / "lt.png", transparency=40))  # grey 40 is the transparent key
    assert tuple(out[0, 0]) == (255, 255, 255) and tuple(out[0, 1]) == (90, 90, 90)


# --- image modes: more than 8 bits ----------------------------------------------------------------------------
def test_dark_16_bit_png_is_not_white(tmp_path):
    """The issue's example: a dark 16-bit grey PNG decoded as pure white (Pillow clips 16-bit
    values when converting to RGB). 5000 / 257 = 19.46 -> 19."""
    path = saved(Image.fromarray(np.full((4, 4), 5000, np.uint16)), tmp_path / "dark16.png")
    with Image.open(path) as img:
        assert img.mode == "I;16" and img.convert("RGB").getpixel((0, 0)) == (255, 255, 255)  # the old decoding
    assert pixel(path) == (19, 19, 19)
    assert decode_image(path, ImageTransform(2, "center_crop")).tolist() == [[[19] * 3] * 2] * 2


@pytest.mark.parametrize("mode, suffix", [("I;16B", "tif"), ("I;16L", "tif"), ("I;16", "tif")])
def test_16_bit_variants_in_tiff(tmp_path, mode, suffix):
    img = Image.new(mode, (3, 1), 5000)
    img.putpixel((1, 0), 65535)
    img.putpixel((2, 0), 257 * 200)
    out = decode_image(saved(img, tmp_path / f"g.{suffix}"))
    # 5000/257 = 19.46 -> 19; 65535/257 = 255; 257 * 200 -> exactly 200 (an 8-bit value stored as 16-bit)
    assert out[0, :, 0].tolist() == [19, 255, 200]


def test_16_bit_native_mode_in_memory():
    img = Image.new("I;16N", (1, 1), 5000)  # no file format stores I;16N itself: it is the machine's order
    assert np.asarray(display_rgb(img)).tolist() == [[[19, 19, 19]]]


def test_16_bit_png_transparency_key(tmp_path):
    arr = np.array([[5000, 1000]], np.uint16)
    path = saved(Image.fromarray(arr), tmp_path / "t16.png", transparency=1000)
    out = decode_image(path)
    assert tuple(out[0, 0]) == (19, 19, 19) and tuple(out[0, 1]) == (255, 255, 255)  # 1000 is transparent


def test_mode_i_from_a_16_bit_pgm(tmp_path):
    path = tmp_path / "g.pgm"
    path.write_bytes(b"P5\n2 1\n1000\n" + np.array([[500, 1000]], ">u2").tobytes())  # maxval 1000
    with Image.open(path) as img:
        assert img.mode == "I"
    # Pillow scales to 16 bits: 500/1000 * 65535 = 32767.5 -> 32768; 32768/257 = 127.50 -> 128; 1000 -> 255
    assert decode_image(path)[0, :, 0].tolist() == [128, 255]


def test_mode_i_tiff_on_the_16_bit_scale_else_refused(tmp_path):
    img = Image.new("I", (2, 1), 300)
    img.putpixel((1, 0), 65535)
    assert decode_image(saved(img, tmp_path / "i.tif"))[0, :, 0].tolist() == [1, 255]  # 300/257 = 1.17 -> 1
    for value in (70000, -5):
        path = saved(Image.new("I", (2, 1), value), tmp_path / f"i{value}.tif")
        with pytest.raises(UnsupportedImageModeError, match=rf"{path.name}: unsupported image mode 'I': values in "
                           rf"\[{value}, {value}\]") as err:
            decode_image(path)
        assert err.value.mode == "I" and isinstance(err.value, CorruptImageError)


def test_mode_f_tiff_in_unit_range_else_refused(tmp_path):
    img = Image.new("F", (3, 1), 0.25)
    img.putpixel((1, 0), 1.0)
    img.putpixel((2, 0), 0.5)
    # 0.25 * 255 = 63.75 -> 64; 1.0 -> 255; 0.5 * 255 = 127.5 -> 128 (halves round up)
    assert decode_image(saved(img, tmp_path / "f.tif"))[0, :, 0].tolist() == [64, 255, 128]
    for name, value in (("big", 2.0), ("neg", -0.1), ("nan", float("nan"))):
        path = saved(Image.new("F", (2, 1), value), tmp_path / f"{name}.tif")
        with pytest.raises(UnsupportedImageModeError, match=rf"{name}.tif: unsupported image mode 'F'"):
            decode_image(path)


# --- image modes: refused, and the rest of the rules -----------------------------------------------------------
def test_mode_lab_tiff(tmp_path):
    path = saved(Image.new("LAB", (2, 2), (128, 128, 128)), tmp_path / "lab.tif")
    # L* = 128/255 * 100 = 50.20, a* = b* = 0 (stored 128): a neutral grey of luminance
    # Y = ((50.20 + 16) / 116)^3 = 0.1859; sRGB: 1.055 * Y^(1/2.4) - 0.055 = 0.4683 -> 119.4 -> 119
    assert pixel(path) == (119, 119, 119)


def test_refused_image_names_file_and_mode(tmp_path):
    path = saved(Image.new("I", (2, 2), 70000), tmp_path / "i32.tif")
    with pytest.raises(UnsupportedImageModeError) as err:
        decode_image(path, ImageTransform(4))
    assert str(err.value) == (f"cannot decode image {path}: unsupported image mode 'I': values in [70000, 70000]; "
                              "cirbench reads 32-bit integer images on the 16-bit scale 0..65535 only")


def test_other_modes_in_memory():
    with pytest.raises(UnsupportedImageModeError, match=r"<image>: unsupported image mode 'HSV'"):
        display_rgb(Image.new("HSV", (1, 1)))
    assert np.asarray(display_rgb(Image.new("RGBX", (1, 1), (1, 2, 3, 0)))).tolist() == [[[1, 2, 3]]]  # X is padding
    # premultiplied alpha: colour already scaled by alpha, so over white c_p + 255 - a (within 1 of
    # Pillow's unpremultiplying): La (64, 128) -> 64 + 127 = 191; RGBa (100, 5, 10, 128) -> (227, 132, 137)
    assert abs(int(np.asarray(display_rgb(Image.new("La", (1, 1), (64, 128))))[0, 0, 0]) - 191) <= 1
    got = np.asarray(display_rgb(Image.new("RGBa", (1, 1), (100, 5, 10, 128))))[0, 0].tolist()
    assert all(abs(g - w) <= 1 for g, w in zip(got, (227, 132, 137))), got
    # ImageTransform.apply takes any mode through the same rules
    assert ImageTransform(1, "stretch").apply(Image.new("I;16", (2, 2), 5000)).tolist() == [[[19, 19, 19]]]


def test_exif_orientation_is_applied(tmp_path):
    """A phone photo stored sideways with EXIF orientation 6 (rotate 90 degrees clockwise to
    display): stored 4 wide x 2 high, left half black, right half white; shown 2 wide x 4 high
    with the black half on top."""
    arr = np.zeros((2, 4, 3), np.uint8)
    arr[:, 2:] = 255
    img = Image.fromarray(arr)
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "phone.png"
    img.save(path, exif=exif.tobytes())
    out = decode_image(path)
    assert out.shape == (4, 2, 3)
    assert out[:2].max() == 0 and out[2:].min() == 255


def test_multi_frame_gif_gives_its_first_frame(tmp_path):
    frames = [Image.new("L", (2, 2), 30), Image.new("L", (2, 2), 220)]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:])
    with Image.open(path) as img:
        assert img.n_frames == 2
    assert pixel(path) == (30, 30, 30)


def test_a_change_of_decode_rules_gets_a_new_cache(tmp_path, monkeypatch):
    """A cache made under other rules (the old ones clipped 16-bit grey to white) is not reused."""
    from cirbench.data import decode
    from cirbench.data.cache import ArrowImageCache

    files = [saved(Image.fromarray(np.full((4, 4), 5000, np.uint16)), tmp_path / "dark16.png")]
    now = ArrowImageCache(tmp_path / "c", "toy", 1, ImageTransform(4), ["dark16.png"], files)
    assert now.images([0]).max() == 19 and now.ready() and now.folder.name.startswith("toy-v1-center_crop4-d2-")
    monkeypatch.setattr(decode, "DECODE_RULES", 3)
    later = ArrowImageCache(tmp_path / "c", "toy", 1, ImageTransform(4), ["dark16.png"], files)
    assert later.folder != now.folder and not later.ready()


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 65535))
def test_16_to_8_bit_is_the_nearest_value(v):
    """Property: a 16-bit grey v decodes to the 8-bit value nearest v / 257, and an 8-bit
    value k stored as 16-bit (257 k) comes back as k."""
    got = int(np.asarray(display_rgb(Image.new("I;16", (1, 1), v)))[0, 0, 0])
    assert abs(got - v / 257) < 0.5
    k = v % 256
    assert int(np.asarray(display_rgb(Image.new("I;16", (1, 1), 257 * k)))[0, 0, 0]) == k


@settings(max_examples=100, deadline=None)
@given(st.tuples(st.integers(0, 255), st.integers(0, 255), st.integers(0, 255), st.integers(0, 255)))
def test_alpha_over_white_property(rgba):
    """Property: compositing over white gives the nearest integer of c a/255 + 255 (1 - a/255)."""
    got = np.asarray(display_rgb(Image.new("RGBA", (1, 1), rgba)))[0, 0]
    a = rgba[3] / 255
    for c, g in zip(rgba[:3], got):
        assert abs(int(g) - (c * a + 255 * (1 - a))) <= 0.5


# --- end to end: the 16-bit reference no longer confuses Recall ------------------------------------------------
class _Greys(LocalImageDataset):
    """Three uniform images: ``grey`` (8-bit 128, the reference), ``white`` (8-bit 255) and
    ``dark16`` (16-bit 5000, seen as 19); gallery [white, dark16]; two queries from grey:
    "dark" -> dark16 and "white" -> white."""

    name = "greys"
    base_loss = "batch_classification"

    def load(self) -> None:
        ids = {n: self.index.add(f"{n}.png", "test") for n in ("grey", "white", "dark16")}
        self.gallery_ids = np.array([ids["white"], ids["dark16"]])
        self.test_queries = [Query(ids["grey"], "dark", (ids["dark16"],)),
                             Query(ids["grey"], "white", (ids["white"],))]


class _Brightness(cirbench.Composer):
    """Target embedding (v, 1 - v), v the mean brightness in [0, 1]; the query embedding is
    (0, 1) for "dark" and (1, 0) for "white". No training."""

    def compose(self, images, texts):
        return torch.tensor([[0.0, 1.0] if t == "dark" else [1.0, 0.0] for t in texts])

    def embed_target(self, images):
        mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
        v = (images * std + mean).mean(dim=(1, 2, 3))
        return torch.stack([v, 1 - v], dim=1)

    def training_loss(self, batch):  # pragma: no cover - never trained
        raise NotImplementedError


@pytest.mark.parametrize("cached", [False, True])
def test_recall_with_a_16_bit_target(tmp_path, cached):
    """Hand computation (cosine scores; the reference is not in the gallery):
    decoded right, dark16 is v = 19/255 = 0.075: query "dark" scores white 0 and dark16
    0.925 / 0.928 = 0.997 -> dark16 first, a hit; query "white" scores white 1 and dark16
    0.075 / 0.928 = 0.080 -> a hit. R@1 = 2/2 = 1.0.
    Under the old decoding dark16 was white (v = 1): "dark" scores both 0, the tie goes to the
    earlier gallery entry (white) -> a miss; "white" ties at 1 -> white, a hit. R@1 was 0.5."""
    root = tmp_path / "greys"
    root.mkdir()
    Image.new("L", (6, 6), 128).save(root / "grey.png")
    Image.new("L", (6, 6), 255).save(root / "white.png")
    Image.fromarray(np.full((6, 6), 5000, np.uint16)).save(root / "dark16.png")
    protocol = dataclasses.replace(SMOKE, image_size=8)
    ds = _Greys(root, protocol, tmp_path / "cache" if cached else None)
    composer = _Brightness(cirbench.ComposerContext(protocol=protocol, train_texts=["dark", "white"]))
    ev = evaluate(composer, ds, (1,), batch_size=2)
    assert ev.ranks == [0, 0] and ev.overall["R@1"] == 1.0


# --- data verify on images -----------------------------------------------------------------------------------
def test_verify_refuses_an_unsupported_mode_by_name(tmp_path):
    root = write_mit_states(tmp_path / "data" / "mit-states")
    bad = root / "images" / "red apple" / "img_1.jpg"
    Image.new("F", (4, 4), 3.0).save(bad, format="TIFF")  # a float TIFF outside [0, 1] under a .jpg name
    dark = root / "images" / "green apple" / "img_0.jpg"
    Image.fromarray(np.full((4, 4), 5000, np.uint16)).save(dark, format="PNG")  # 16-bit: decodable
    report = verify_dataset(REGISTRY.dataset("mit-states"), DataLocations(root=tmp_path / "data"))
    refused = [p for p in report.problems if "refused" in p.message]
    assert [p.path for p in refused] == [str(bad)]
    assert "unsupported image mode 'F': values in [3.0, 3.0]" in refused[0].message
    assert report.images_ok == report.images_listed - 1
