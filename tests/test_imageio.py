"""hitok.imageio / highbit / fsutil: decoding awkward files, keeping metadata, atomic writes."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageOps

from cli_corpus import bad_corpus, exif_rotated_jpeg, png16, smooth_rgb, srgb_icc
from hitok import highbit
from hitok.errors import UserError
from hitok.fsutil import atomic_write
from hitok.imageio import Picture, apply_orientation, read_image, write_image


@pytest.mark.parametrize("orientation", range(1, 9))
def test_orientation_matches_pillow(tmp_path, orientation):
    path = exif_rotated_jpeg(tmp_path / "r.jpg", orientation)
    expected = np.asarray(ImageOps.exif_transpose(Image.open(path)))
    pic = read_image(path)
    assert np.array_equal(pic.pixels, expected)
    raw = np.asarray(Image.open(path))
    assert np.array_equal(apply_orientation(raw, orientation), expected)


def test_exif_kept_with_orientation_reset(tmp_path):
    pic = read_image(exif_rotated_jpeg(tmp_path / "r.jpg", 6))
    assert pic.size == (16, 24)  # stored 24x16, rotated upright
    write_image(tmp_path / "o.jpg", pic, "JPEG")
    exif = Image.open(tmp_path / "o.jpg").getexif()
    assert exif.get(0x0112) == 1 and exif.get(0x010F) == "HitokCam"


@pytest.mark.parametrize("channels", [1, 2, 3, 4])
def test_png16_and_tiff16_round_trip_exactly(tmp_path, channels):
    px = np.random.default_rng(channels).integers(0, 65536, (7, 5, channels), dtype=np.uint16)
    with open(tmp_path / "a.png", "wb") as fp:
        highbit.write_png16(fp, px, icc=b"\x00" * 200)
    assert np.array_equal(highbit.read_png16(tmp_path / "a.png"), px)
    with open(tmp_path / "a.tif", "wb") as fp:
        highbit.write_tiff16(fp, px)
    assert np.array_equal(highbit.read_tiff16(tmp_path / "a.tif"), px)


def test_16bit_png_read_and_written_at_16_bits(tmp_path):
    path, px = png16(tmp_path / "d.png", channels=4)
    pic = read_image(path)
    assert pic.bits == 16 and pic.pixels.shape == (16, 20, 3) and pic.alpha.shape == (16, 20)
    assert np.array_equal(pic.pixels, px[..., :3])
    for fmt, name in (("PNG", "o.png"), ("TIFF", "o.tif")):
        write_image(tmp_path / name, pic, fmt)
        back = read_image(tmp_path / name)
        assert back.bits == 16 and np.array_equal(back.pixels, pic.pixels) and np.array_equal(back.alpha, pic.alpha)


def test_modes_are_normalised(tmp_path):
    files = bad_corpus(tmp_path)
    grey = read_image(files["grey"])
    assert grey.grey and grey.pixels.dtype == np.uint8
    pal = read_image(files["p_transparent"])
    assert pal.pixels.shape == (16, 24, 3) and pal.alpha[0, 0] == 0 and pal.alpha[8, 16] == 255
    cmyk = read_image(files["cmyk_jpeg"])
    assert cmyk.pixels.shape == (16, 20, 3) and cmyk.icc is None
    ref = smooth_rgb(16, 20).astype(int)
    assert np.abs(cmyk.pixels.astype(int) - ref).mean() < 12  # colours survive CMYK and back
    Image.fromarray(np.zeros((4, 4), np.uint8)).convert("1").save(tmp_path / "bw.png")
    assert read_image(tmp_path / "bw.png").grey
    anim = read_image(files["animated_gif"])
    assert any("first frame" in w for w in anim.warnings)


def test_icc_profile_copied_and_mismatched_one_dropped(tmp_path):
    icc = srgb_icc()
    Image.fromarray(smooth_rgb(8, 8)).save(tmp_path / "c.png", icc_profile=icc)
    pic = read_image(tmp_path / "c.png")
    assert pic.icc == icc
    write_image(tmp_path / "o.webp", pic, "WEBP")
    assert Image.open(tmp_path / "o.webp").info.get("icc_profile") == icc
    # An RGB profile on a grey image describes the wrong colour space: it is dropped.
    Image.fromarray(smooth_rgb(8, 8)[..., 0]).save(tmp_path / "g.png", icc_profile=icc)
    assert read_image(tmp_path / "g.png").icc is None


@pytest.mark.parametrize("name,needle", [
    ("empty", "empty file"),
    ("truncated_jpeg", "truncated or corrupt"),
    ("text_as_jpg", "not an image"),
    ("bomb_png", "decompression-bomb guard"),
])
def test_bad_files_raise_one_line_user_errors(tmp_path, name, needle):
    files = bad_corpus(tmp_path)
    with pytest.raises(UserError) as info:
        read_image(files[name])
    assert needle in str(info.value) and "\n" not in str(info.value)


def test_max_pixels_raises_the_guard(tmp_path):
    path = bad_corpus(tmp_path)["bomb_png"]
    with pytest.raises(UserError, match="--max-pixels 10000000000"):
        read_image(path)
    with pytest.raises(UserError, match="truncated or corrupt"):  # past the guard: no pixel data
        read_image(path, max_pixels=10**10)
    assert Image.MAX_IMAGE_PIXELS == 89_478_485  # Pillow's global guard is restored


def test_jpeg_flattens_alpha_onto_white(tmp_path):
    px = np.zeros((8, 8, 3), np.uint8)
    alpha = np.zeros((8, 8), np.uint8)
    warnings = write_image(tmp_path / "o.jpg", Picture(pixels=px, alpha=alpha), "JPEG")
    assert "flattened onto white" in warnings[0]
    assert np.asarray(Image.open(tmp_path / "o.jpg")).min() > 240


def test_quality_changes_jpeg_size(tmp_path):
    pic = Picture(pixels=np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8))
    write_image(tmp_path / "lo.jpg", pic, "JPEG", quality=30)
    write_image(tmp_path / "hi.jpg", pic, "JPEG", quality=98)
    assert (tmp_path / "lo.jpg").stat().st_size < (tmp_path / "hi.jpg").stat().st_size


def test_failed_write_leaves_nothing_and_keeps_the_old_file(tmp_path, monkeypatch):
    dest = tmp_path / "o.png"
    dest.write_bytes(b"old")

    def broken_save(self, fp, *args, **kwargs):
        fp.write(b"partial data")
        raise OSError("encoder exploded")

    monkeypatch.setattr(Image.Image, "save", broken_save)
    with pytest.raises(UserError, match="cannot write"):
        write_image(dest, Picture(pixels=smooth_rgb(4, 4)), "PNG")
    assert dest.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.png"]


def test_ctrl_c_during_write_leaves_no_file(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        with atomic_write(tmp_path / "x.png") as fp:
            fp.write(b"half")
            raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []


def test_write_into_a_file_posing_as_folder_is_one_line(tmp_path):
    (tmp_path / "blocker").write_text("I am a file")
    with pytest.raises(UserError, match="not a folder") as info:
        write_image(tmp_path / "blocker" / "o.png", Picture(pixels=smooth_rgb(4, 4)), "PNG")
    assert "\n" not in str(info.value)
    assert (tmp_path / "blocker").read_text() == "I am a file"


@pytest.mark.parametrize("fmt,suffix", [("PNG", "png"), ("JPEG", "jpg"), ("WEBP", "webp"), ("TIFF", "tif"),
                                        ("BMP", "bmp")])
@pytest.mark.parametrize("channels,alpha,bits", [(1, False, 8), (1, True, 8), (3, False, 8), (3, True, 8),
                                                 (1, True, 16), (3, True, 16)])
def test_every_layout_writes_to_every_format(tmp_path, fmt, suffix, channels, alpha, bits):
    dtype, top = (np.uint8, 255) if bits == 8 else (np.uint16, 65535)
    px = (smooth_rgb(6, 10)[..., :channels].astype(np.float64) / 255 * top).astype(dtype)
    a = (np.linspace(0.2, 1, 60).reshape(6, 10) * top).astype(dtype) if alpha else None
    write_image(tmp_path / f"o.{suffix}", Picture(pixels=px, alpha=a), fmt)
    back = read_image(tmp_path / f"o.{suffix}")
    assert back.size == (10, 6)
    assert back.bits == (16 if bits == 16 and fmt in ("PNG", "TIFF") else 8)
    assert (back.alpha is not None) == (alpha and fmt not in ("JPEG", "BMP"))
    ref = px.astype(np.float64) / top
    got = back.pixels.astype(np.float64) / back.max_value
    if got.shape[2] != ref.shape[2]:
        ref = np.repeat(ref, 3, axis=2)
    if a is not None and fmt in ("JPEG", "BMP"):  # flattened onto white
        w = a.astype(np.float64)[..., None] / top
        ref = ref * w + (1 - w)
    assert np.abs(got - ref).mean() < 0.03
    if a is not None and back.alpha is not None:
        assert np.abs(back.alpha / back.max_value - a / top).max() < 0.01
    assert [p.name for p in tmp_path.iterdir()] == [f"o.{suffix}"]


# -- TIFF tags, float samples ----------------------------------------------------------------------
TAGS = {305: "GIMP 2.10", 271: "HitokCam", 33432: "(c) someone"}


def tagged_tiff(path, bits: int = 8, channels: int = 3):
    """A TIFF as real writers make them: with Software / Make / Copyright tags."""
    px = smooth_rgb(12, 16)[..., :channels]
    if bits == 8:
        Image.fromarray(px if channels == 3 else px[..., 0]).save(path, tiffinfo=TAGS)
    else:
        with open(path, "wb") as fp:
            highbit.write_tiff16(fp, px.astype(np.uint16) * 257 + 3, tags=TAGS)
    return path


@pytest.mark.parametrize("bits", [8, 16])
@pytest.mark.parametrize("channels", [1, 3])
def test_tagged_tiff_round_trips_with_its_tags(tmp_path, bits, channels):
    pic = read_image(tagged_tiff(tmp_path / "in.tif", bits, channels))
    assert pic.bits == bits
    warnings = write_image(tmp_path / "out.tif", pic, "TIFF")
    back = Image.open(tmp_path / "out.tif")
    assert {t: back.getexif().get(t) for t in TAGS} == TAGS and warnings == []
    again = read_image(tmp_path / "out.tif")
    assert again.bits == bits and np.array_equal(again.pixels, pic.pixels)


def test_jpeg_exif_into_tiff_keeps_the_descriptive_tags_and_says_what_it_drops(tmp_path):
    im = Image.fromarray(smooth_rgb(8, 8))
    exif = im.getexif()
    exif[271] = "HitokCam"
    exif.get_ifd(0x8769)[0x9003] = "2024:01:01 12:00:00"  # DateTimeOriginal, in the Exif sub-IFD
    im.save(tmp_path / "c.jpg", exif=exif.tobytes())
    warnings = write_image(tmp_path / "o.tif", read_image(tmp_path / "c.jpg"), "TIFF")
    assert Image.open(tmp_path / "o.tif").getexif().get(271) == "HitokCam"
    assert any("not copied into TIFF" in w for w in warnings)


def float_tiff(path, px: np.ndarray):
    """A baseline uncompressed 32-bit float TIFF (Pillow opens one channel as mode F, not RGB)."""
    import struct

    h, w, c = px.shape
    data = px.astype("<f4").tobytes()
    entries = [(256, 4, [w]), (257, 4, [h]), (258, 3, [32] * c), (259, 3, [1]), (262, 3, [2 if c >= 3 else 1]),
               (273, 4, [0]), (277, 3, [c]), (278, 4, [h]), (279, 4, [len(data)]), (284, 3, [1]), (339, 3, [3] * c)]
    extra_at = 8 + 2 + 12 * len(entries) + 4
    extra, fields = b"", []
    for tag, typ, vals in entries:
        raw = struct.pack("<" + ("H" if typ == 3 else "I") * len(vals), *vals)
        if len(raw) <= 4:
            fields.append(raw.ljust(4, b"\0"))
        else:
            fields.append(struct.pack("<I", extra_at + len(extra)))
            extra += raw
    fields[5] = struct.pack("<I", extra_at + len(extra))
    ifd = b"".join(struct.pack("<HHI", t, ty, len(v)) + f for (t, ty, v), f in zip(entries, fields))
    path.write_bytes(b"II*\0" + struct.pack("<IH", 8, len(entries)) + ifd + b"\0" * 4 + extra + data)
    return path


@pytest.mark.parametrize("channels", [1, 3])
def test_float_tiff_in_0_1_is_scaled_with_a_warning(tmp_path, channels):
    px = np.linspace(0, 1, 4 * 5 * channels, dtype=np.float32).reshape(4, 5, channels)
    pic = read_image(float_tiff(tmp_path / "f.tif", px))
    assert pic.bits == 16 and np.abs(pic.pixels / 65535 - px).max() < 1e-4
    assert any("32-bit float" in w for w in pic.warnings)


def test_hdr_float_tiff_is_tone_mapped_not_crushed(tmp_path):
    px = np.full((4, 4, 1), 0.5, np.float32)
    px[0, 0] = 8.0  # a highlight far above 1
    pic = read_image(float_tiff(tmp_path / "hdr.tif", px))
    v = pic.pixels[..., 0] / 65535
    assert v[0, 0] == 1.0 and 0.3 < v[1, 1] < 0.5  # extended Reinhard: 0.5 * (1 + 0.5/64) / 1.5 = 0.336
    assert any("tone-mapped" in w and "8" in w for w in pic.warnings)


def test_int32_beyond_16_bits_is_scaled_with_a_warning(tmp_path):
    Image.fromarray(np.array([[0, 100_000], [50_000, 200_000]], np.int32), mode="I").save(tmp_path / "i.tif")
    pic = read_image(tmp_path / "i.tif")
    assert pic.pixels.max() == 65535 and pic.pixels[0, 1] == 32768
    assert any("scaled linearly" in w for w in pic.warnings)


def test_probe_reads_the_upright_size_from_the_header(tmp_path):
    from hitok.imageio import probe_image

    assert probe_image(exif_rotated_jpeg(tmp_path / "r.jpg", 6)) == (16, 24)
    files = bad_corpus(tmp_path / "bad")
    for name, needle in (("empty", "empty file"), ("text_as_jpg", "not an image"), ("bomb_png", "bomb")):
        with pytest.raises(UserError, match=needle):
            probe_image(files[name])


def test_float_tiff_bomb_is_refused_before_decompression(tmp_path):
    path = float_tiff(tmp_path / "f.tif", np.zeros((4, 5, 3), np.float32))
    with pytest.raises(UserError, match="decompression-bomb guard"):
        read_image(path, max_pixels=19)


def _zlib_level_class(png: bytes) -> int:
    """FLEVEL of the first IDAT's zlib header (RFC 1950): 0 = levels 0-1, 1 = 2-5, 2 = 6, 3 = 7-9."""
    at = png.index(b"IDAT") + 4
    return png[at + 1] >> 6


def test_png_output_is_lossless_at_a_fast_zlib_level(tmp_path):
    """8-bit PNG output is written at zlib level 4 (imageio.PNG_COMPRESS_LEVEL), not Pillow's slower 6."""
    rgb = smooth_rgb(64, 48)
    write_image(tmp_path / "o.png", Picture(pixels=rgb), "PNG")
    data = (tmp_path / "o.png").read_bytes()
    assert _zlib_level_class(data) == 1
    assert np.array_equal(np.asarray(Image.open(tmp_path / "o.png")), rgb)
