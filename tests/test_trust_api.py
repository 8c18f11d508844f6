"""Issue 19 ("Trust, round two"), the library side: an input is never written over, a caller's mistake is a
``UserError`` with one line, and ``Upscaler.warnings`` holds what ``hitok upscale`` prints. Numbers are the issue's.
"""

from __future__ import annotations

import builtins
import errno
import io
import json

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

import hitok
from cli_corpus import save_png, smooth_rgb
from hitok import accel, device as device_lib, model_store
from hitok.errors import UserError
from hitok.imageio import Picture, read_image, write_image
from hitok.outsize import OutputSize
from hitok.tokens import load_codes

torch.set_num_threads(1)


@pytest.fixture
def up(tiny_model):
    return hitok.Upscaler(tiny_model, "cpu", "fp32")


# -- 1: upscale_file never writes over its input, and replaces an output only when told -------------------------
def test_upscale_file_refuses_to_write_over_its_input(tmp_path, up):
    src = save_png(tmp_path / "in.png", smooth_rgb(8, 12))
    before = src.read_bytes()
    with pytest.raises(UserError, match="is the input file"):
        up.upscale_file(src, src, "PNG")  # the call
    with pytest.raises(UserError, match="is the input file"):
        up.upscale_file(src, src, "PNG", overwrite=True)  # not even when told to overwrite
    link = tmp_path / "link.png"
    link.symlink_to(src)
    with pytest.raises(UserError, match="is the input file"):
        up.upscale_file(link, src, "PNG", overwrite=True)
    assert src.read_bytes() == before


def test_upscale_file_replaces_an_output_only_with_overwrite(tmp_path, up):
    src = save_png(tmp_path / "in.png", smooth_rgb(8, 12))
    out = save_png(tmp_path / "out.png", smooth_rgb(4, 4))
    with pytest.raises(UserError, match="already exists; pass overwrite=True"):
        up.upscale_file(src, out, "PNG")
    assert Image.open(out).size == (4, 4)
    result = up.upscale_file(str(src), str(out), "png", overwrite=True)  # str paths, a --format spelling
    assert Image.open(out).size == (48, 32) and result.format == "PNG"
    with pytest.raises(UserError, match="cannot tell the image format from .heic"):
        up.upscale_file(src, tmp_path / "x.heic")
    with pytest.raises(UserError, match="format 'heic'"):
        up.upscale_file(src, tmp_path / "x.png", "heic")


# -- 4: a TIFF's camera EXIF and GPS go on into JPEG/PNG, and TIFF output says that it drops them ----------------
def camera_tiff(path, bits=8):
    from PIL import TiffImagePlugin

    info = TiffImagePlugin.ImageFileDirectory_v2()
    info[0x010F] = "HitokCam"
    info[0x8769] = {0x9003: "2024:05:06 07:08:09"}
    info[0x8825] = {1: "N", 3: "E"}
    Image.fromarray(smooth_rgb(8, 12)).save(path, tiffinfo=info)
    return path


def test_tiff_camera_exif_reaches_jpeg_and_png(tmp_path, up):
    src = camera_tiff(tmp_path / "cam.tif")
    for name, fmt in (("o.jpg", "JPEG"), ("o.png", "PNG")):
        result = up.upscale_file(src, tmp_path / name, fmt)
        exif = Image.open(tmp_path / name).getexif()
        assert exif.get(0x010F) == "HitokCam" and exif.get_ifd(0x8769).get(0x9003) == "2024:05:06 07:08:09"
        assert exif.get_ifd(0x8825).get(1) == "N"
        assert not any("EXIF" in w for w in result.warnings)


def test_tiff_to_tiff_says_the_camera_exif_is_dropped(tmp_path, up):
    result = up.upscale_file(camera_tiff(tmp_path / "cam.tif"), tmp_path / "o.tif", "TIFF")
    assert any("camera EXIF" in w and "GPS" in w for w in result.warnings)
    assert up.warnings == result.warnings
    assert Image.open(tmp_path / "o.tif").getexif().get(0x010F) == "HitokCam"


# -- 5: the API's errors are UserErrors; its warnings are the CLI's --------------------------------------------
@pytest.mark.parametrize("bad,needle", [(None, "not NoneType"), (np.zeros((4, 4, 3), np.uint8), "not ndarray"),
                                        ("photo.png", "upscale_file")])
def test_upscale_refuses_what_is_no_pillow_image(up, bad, needle):
    with pytest.raises(UserError, match=needle):
        up.upscale(bad)


@pytest.mark.parametrize("size", [(0, 0), (0, 5), (7, 0)])
def test_upscale_refuses_an_image_without_pixels(up, size):
    with pytest.raises(UserError, match="no pixels") as caught:
        up.upscale(Image.new("RGB", size))
    assert "\n" not in str(caught.value)


def test_upscale_of_a_broken_lazy_image_is_a_user_error(tmp_path, up):
    buf = io.BytesIO()
    Image.fromarray(smooth_rgb(32, 32)).save(buf, format="PNG")
    im = Image.open(io.BytesIO(buf.getvalue()[:200]))  # the header reads, the pixels do not
    with pytest.raises(UserError, match="cannot read the image's pixels"):
        up.upscale(im)


def test_tone_mapped_float_image_leaves_a_warning(up):
    hdr = Image.fromarray(np.linspace(0, 4, 64, dtype=np.float32).reshape(8, 8))  # mode F, beyond 0..1
    out = up.upscale(hdr)
    assert out.size == (32, 32) and any("tone-mapped" in w for w in up.warnings)
    up.upscale(Image.fromarray(smooth_rgb(8, 8)))
    assert up.warnings == []  # each call starts anew


# -- 9: HITOK_ENGINE that does not run here says so --------------------------------------------------------------
@pytest.mark.parametrize("mode,dtype,needle", [("foo", torch.float32, "is not an engine"),
                                               ("onnx", torch.float32, "needs onnxruntime"),
                                               ("int8", torch.bfloat16, "only at fp32 on the CPU")])
def test_an_engine_that_cannot_run_is_a_warning(tiny_model, monkeypatch, mode, dtype, needle):
    monkeypatch.setenv("HITOK_ENGINE", mode)
    monkeypatch.setattr(accel, "available", lambda: False)
    up = hitok.Upscaler(tiny_model, "cpu", dtype)
    assert up.engine is None and len(up.warnings) == 1 and needle in up.warnings[0]
    assert f"HITOK_ENGINE={mode}" in up.warnings[0]


def test_the_default_engine_says_nothing(tiny_model, monkeypatch):
    monkeypatch.delenv("HITOK_ENGINE", raising=False)
    assert hitok.Upscaler(tiny_model, "cpu", "fp32").warnings == []


# -- 10: an unreadable file is not "corrupt" ----------------------------------------------------------------------
def test_unreadable_file_is_permission_denied_not_corrupt(tmp_path, monkeypatch):
    src = save_png(tmp_path / "locked.png", smooth_rgb(8, 8))
    real_open = io.open

    def denied(file, *args, **kwargs):
        if str(file) == str(src):
            raise PermissionError(errno.EACCES, "Permission denied", str(file))
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(io, "open", denied)
    monkeypatch.setattr(builtins, "open", denied)
    with pytest.raises(UserError) as caught:
        read_image(src)
    assert "permission denied" in str(caught.value) and "corrupt" not in str(caught.value)


def test_a_pipe_is_refused_not_waited_on(tmp_path):
    import os

    fifo = tmp_path / "photo.png"
    os.mkfifo(fifo)
    with pytest.raises(UserError, match="not a regular file"):
        read_image(fifo)


# -- 11: a damaged token dump is refused in one line -------------------------------------------------------------
def damaged_dump(tmp_path, tiny_model, **meta) -> "Path":  # noqa: F821
    from hitok.tokens import picture_to_tensor, save_codes, tokenize

    codes = tokenize(tiny_model, picture_to_tensor(Picture(pixels=smooth_rgb(16, 16))), "hr", "x")
    path = tmp_path / "c.safetensors"
    save_codes(path, codes)
    save_file(load_file(str(path)), str(path), metadata={**codes.meta, **meta})
    return path


@pytest.mark.parametrize("meta,needle", [({"image_width": "-5"}, "image_width='-5'"),
                                         ({"image_width": "0"}, "image_width='0'"),
                                         ({"groups": "abc"}, "groups='abc'"),
                                         ({"image_height": "999"}, "more than its tokens hold")])
def test_damaged_token_dump_is_one_line(tmp_path, tiny_model, meta, needle):
    with pytest.raises(UserError, match="damaged") as caught:
        load_codes(damaged_dump(tmp_path, tiny_model, **meta))
    assert needle in str(caught.value)


# -- 14: the fp16 warning on an AMX CPU names what auto picks there ---------------------------------------------
def test_fp16_warning_on_an_amx_cpu_says_auto_picks_bf16(monkeypatch):
    monkeypatch.delenv("HITOK_CPU_FP32", raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_fp16_supported", lambda: False, raising=False)
    cpu = torch.device("cpu")
    note = device_lib.precision_warning(torch.float16, cpu)
    assert "no AMX-FP16" in note and "auto picks bf16" in note
    assert device_lib.precision_warning(torch.bfloat16, cpu) is None
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)
    assert "auto picks fp32" in device_lib.precision_warning(torch.bfloat16, cpu)


# -- 15: sizes below a pixel, nested metadata, 16-bit into 8-bit formats, LAB -----------------------------------
@pytest.mark.parametrize("size", [OutputSize(outscale=0.01), OutputSize(outscale=1e-300), OutputSize(height=1)])
def test_an_output_below_one_pixel_is_refused(size):
    with pytest.raises(UserError, match="less than one pixel"):
        size.target(2, 40)  # --height 1: 0.05 pixels wide


def test_output_names_never_hold_an_exponent():
    assert OutputSize(outscale=1e-5).tag() == "x0.00001"
    assert OutputSize(outscale=2).tag() == "x2" and OutputSize(outscale=1.5).tag() == "x1.5"


def test_deeply_nested_model_config_is_one_line(tmp_path, tiny_model_path):
    from safetensors import safe_open

    with safe_open(str(tiny_model_path), "pt") as f:
        meta = f.metadata()
    deep = tmp_path / "deep.safetensors"
    save_file(load_file(str(tiny_model_path)), str(deep), metadata={**meta, "config": "[" * 100_000 + "]" * 100_000})
    for call in (lambda: model_store.load(str(deep)), lambda: model_store.add_model(deep, "deep")):
        with pytest.raises(UserError, match="nested too deeply"):
            call()
    assert model_store.peek(str(deep)) is None
    assert "nested too deeply" in model_store._summary(deep)


def test_16_bit_into_jpeg_says_it_is_8_bit(tmp_path):
    pic = Picture(pixels=(smooth_rgb(4, 4).astype(np.uint16) * 257))
    assert any("8 bits" in w for w in write_image(tmp_path / "o.jpg", pic, "JPEG"))
    assert write_image(tmp_path / "o.png", pic, "PNG") == []


def test_lab_tiff_comes_out_rgb_without_alpha(tmp_path, up):
    src = tmp_path / "lab.tif"
    Image.fromarray(smooth_rgb(8, 8)).convert("LAB").save(src)
    pic = read_image(src)
    assert pic.alpha is None and pic.pixels.shape == (8, 8, 3)
    rgb = np.asarray(Image.open(src).convert("RGB"), dtype=np.int16)
    assert np.abs(pic.pixels.astype(np.int16) - rgb).max() == 0
    up.upscale_file(src, tmp_path / "o.png", "PNG")
    assert Image.open(tmp_path / "o.png").mode == "RGB"
