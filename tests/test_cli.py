"""The hitok command line, end to end through Typer's CliRunner, with a random-init tiny model.

Every command gets an invoke test (exit code, files, messages); the bad-input corpus from the
issue is run through ``hitok upscale`` and each case must give its documented result and leave
no partial file behind.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from cli_corpus import bad_corpus, exif_rotated_jpeg, save_png, smooth_rgb, srgb_icc
from cli_helpers import files_in, hitok, interrupt_on_tile, one_error_line
from hitok import model_store
from hitok.highbit import read_png16
from hitok.imageio import Picture
from hitok.tokens import panel_box
from hitok.upscaler import Upscaler, resolve_output

torch.set_num_threads(1)  # tiny tensors: threads only add contention on a shared 2-core machine


# -- upscale ---------------------------------------------------------------------------------------
def test_help_lists_every_command():
    result = hitok("--help")
    assert result.exit_code == 0
    for cmd in ("upscale", "batch", "tokenize", "detokenize", "models"):
        assert cmd in result.output


def test_upscale_default_name_size_and_refusals(tmp_path, tiny_model_path):
    src = save_png(tmp_path / "photo.png", smooth_rgb(20, 28))
    result = hitok("upscale", src, "--model", tiny_model_path)
    assert result.exit_code == 0, result.output
    out = tmp_path / "photo_x4.png"
    assert "wrote" in result.stdout and Image.open(out).size == (112, 80)
    before = out.read_bytes()
    again = hitok("upscale", src, "--model", tiny_model_path)
    assert again.exit_code == 1 and "already exists" in one_error_line(again)
    assert hitok("upscale", src, "--model", tiny_model_path, "--overwrite", "--detail", 1).exit_code == 0
    assert out.read_bytes() != before  # replaced, and --detail 1 decodes differently
    same = hitok("upscale", src, "-o", src, "--model", tiny_model_path, "--overwrite")
    assert same.exit_code == 1 and "input" in one_error_line(same)
    assert Image.open(src).size == (28, 20)  # the input is never written


def test_output_names_never_double_the_suffix():
    assert resolve_output(Path("a/photo.png"), None) == (Path("a/photo_x4.png"), "PNG")
    assert resolve_output(Path("IMG.JPEG"), None) == (Path("IMG_x4.JPEG"), "JPEG")
    assert resolve_output(Path("scan.png"), None, "jpg") == (Path("scan_x4.jpg"), "JPEG")
    assert resolve_output(Path("anim.gif"), None) == (Path("anim_x4.png"), "PNG")
    assert resolve_output(Path("x.png"), Path("y.webp")) == (Path("y.webp"), "WEBP")


def test_upscale_json_tiles_and_format(tmp_path, tiny_model_path):
    src = save_png(tmp_path / "p.png", smooth_rgb(24, 40))
    result = hitok("upscale", src, "-o", tmp_path / "o.webp", "--model", tiny_model_path, "--tile", 16,
                   "--overlap", 4, "--json", "--quality", 90)
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert info["output_size"] == [160, 96] and info["tile"] == 16 and info["tiles"] == 6
    assert info["overlap"] == 4 and info["format"] == "WEBP" and info["detail"] == 2
    assert Image.open(tmp_path / "o.webp").format == "WEBP"
    assert info["color_fix"] is True  # on by default


def test_no_color_fix_gives_the_raw_token_output(tmp_path, tiny_model_path):
    src = save_png(tmp_path / "p.png", smooth_rgb(24, 40))
    outs = {}
    for flag in ("--color-fix", "--no-color-fix"):
        result = hitok("upscale", src, "-o", tmp_path / f"{flag}.png", "--model", tiny_model_path, "--json", flag)
        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout)["color_fix"] is (flag == "--color-fix")
        outs[flag] = np.asarray(Image.open(tmp_path / f"{flag}.png"), dtype=np.float32)
    # the colour fix pulls the (random) tiny model's output towards the input's coarse colours
    lr_up = np.asarray(Image.open(src).resize((160, 96), Image.BICUBIC), dtype=np.float32)
    err = {k: np.abs(v - lr_up).mean() for k, v in outs.items()}
    assert err["--color-fix"] < 0.5 * err["--no-color-fix"]


@pytest.mark.parametrize("args,needle", [
    (["--tile", "abc"], "--tile"),
    (["--tile", "3"], "multiple of 2"),
    (["--detail", "5"], "use 1..2"),
    (["--format", "png", "-o", "x.jpg"], "--format is png"),
    (["-o", "x.xyz"], "cannot tell the image format"),
    (["--model", "nosuchmodel"], "no model of that name"),
    (["--model", "weights.pth"], "no such model file"),
])
def test_upscale_option_errors_are_one_line(tmp_path, tiny_model_path, args, needle, monkeypatch):
    monkeypatch.chdir(tmp_path)
    save_png(tmp_path / "p.png", smooth_rgb(8, 8))
    if "--model" not in args:
        args = args + ["--model", str(tiny_model_path)]
    result = hitok("upscale", "p.png", *args)
    assert result.exit_code == 1 and needle in one_error_line(result)
    assert files_in(tmp_path) == ["p.png"]


def test_missing_default_model_is_one_clear_line(tmp_path, monkeypatch):
    monkeypatch.setattr(model_store, "default_model_path", lambda: tmp_path / "absent.safetensors")
    src = save_png(tmp_path / "p.png", smooth_rgb(8, 8))
    result = hitok("upscale", src)
    line = one_error_line(result)
    assert result.exit_code == 1 and "no default model is installed" in line and "--model" in line


def test_bad_model_files_are_refused(tmp_path):
    src = save_png(tmp_path / "p.png", smooth_rgb(8, 8))
    pickle = tmp_path / "m.pth"
    pickle.write_bytes(b"\x80\x04not really")
    assert "pickle" in one_error_line(hitok("upscale", src, "--model", pickle))
    garbage = tmp_path / "g.safetensors"
    garbage.write_bytes(b"\x00" * 64)
    assert "safetensors" in one_error_line(hitok("upscale", src, "--model", garbage))


def test_mismatched_model_file_is_refused(tmp_path, tiny_model_path):
    state = load_file(str(tiny_model_path))
    from safetensors import safe_open

    with safe_open(str(tiny_model_path), "pt") as f:
        meta = f.metadata()
    name = sorted(state)[0]
    state[name] = torch.zeros(3, 3)
    bad = tmp_path / "bad.safetensors"
    save_file(state, str(bad), metadata=meta)
    src = save_png(tmp_path / "p.png", smooth_rgb(8, 8))
    result = hitok("upscale", src, "--model", bad)
    assert result.exit_code == 1 and "shape" in one_error_line(result)


def test_debug_shows_the_traceback(tmp_path):
    quiet = hitok("upscale", tmp_path / "missing.png")
    assert quiet.exit_code == 1 and "no such file" in one_error_line(quiet)
    loud = hitok("--debug", "upscale", tmp_path / "missing.png")
    assert loud.exit_code != 0 and type(loud.exception).__name__ == "UserError"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on machines without CUDA")
def test_unavailable_device_is_one_line(tmp_path, tiny_model_path):
    src = save_png(tmp_path / "p.png", smooth_rgb(8, 8))
    result = hitok("upscale", src, "--model", tiny_model_path, "--device", "cuda")
    assert result.exit_code == 1 and "CUDA is not available" in one_error_line(result)


def test_reduced_precision_nan_retries_in_fp32(tiny_model):
    class NaNInHalf(torch.nn.Module):
        """The tiny model, except that it overflows under autocast (fp16's black-image failure)."""

        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def __getattr__(self, name):  # the geometry and settings are the inner model's
            try:
                return super().__getattr__(name)
            except AttributeError:
                return getattr(self.inner, name)

        def upscale(self, lr, detail=None, color_fix=False, fidelity=None):
            out = self.inner.upscale(lr, detail, color_fix, fidelity)
            return out * float("nan") if torch.is_autocast_enabled(lr.device.type) else out

    up = Upscaler(NaNInHalf(tiny_model), torch.device("cpu"), torch.bfloat16)
    out, _ = up.upscale_picture(Picture(pixels=smooth_rgb(16, 16)), tile=64)
    reference, _ = Upscaler(tiny_model, torch.device("cpu"), torch.float32).upscale_picture(
        Picture(pixels=smooth_rgb(16, 16)), tile=64)
    assert up.dtype == torch.float32 and any("re-ran in fp32" in w for w in up.warnings)
    assert np.array_equal(out.pixels, reference.pixels)


def test_bf16_on_cpu_runs(tmp_path, tiny_model_path):
    src = save_png(tmp_path / "p.png", smooth_rgb(16, 16))
    result = hitok("upscale", src, "--model", tiny_model_path, "--precision", "bf16", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["precision"] in ("bf16", "fp32")


# -- the bad-input corpus --------------------------------------------------------------------------
FAILS = {  # input -> documented one-line error
    "empty": "empty file",
    "truncated_jpeg": "truncated or corrupt",
    "text_as_jpg": "not an image",
    "bomb_png": "decompression-bomb guard",
}


@pytest.mark.parametrize("case", sorted(FAILS))
def test_corpus_failures(tmp_path, tiny_model_path, case):
    files = bad_corpus(tmp_path / "in")
    before = files_in(tmp_path)
    result = hitok("upscale", files[case], "--model", tiny_model_path)
    assert result.exit_code == 1 and FAILS[case] in one_error_line(result)
    assert files_in(tmp_path) == before  # no partial or temp file


def test_corpus_bomb_passes_the_guard_with_max_pixels(tmp_path, tiny_model_path):
    files = bad_corpus(tmp_path / "in")
    result = hitok("upscale", files["bomb_png"], "--model", tiny_model_path, "--max-pixels", 10**10)
    assert result.exit_code == 1 and "truncated or corrupt" in one_error_line(result)


def _run_ok(src: Path, model: Path, *extra) -> tuple[Path, str]:
    result = hitok("upscale", src, "--model", model, "--json", *extra)
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    return Path(info["output"]), result.stderr


def test_corpus_cmyk_jpeg(tmp_path, tiny_model_path):
    out, _ = _run_ok(bad_corpus(tmp_path)["cmyk_jpeg"], tiny_model_path)
    im = Image.open(out)
    assert out.name == "cmyk_x4.jpg" and im.mode == "RGB" and im.size == (80, 64)


def test_corpus_palette_with_transparency(tmp_path, tiny_model_path):
    out, _ = _run_ok(bad_corpus(tmp_path)["p_transparent"], tiny_model_path)
    im = Image.open(out)
    assert im.mode == "RGBA" and im.size == (96, 64)
    alpha = np.asarray(im)[..., 3]
    assert alpha[:, :40].max() == 0 and alpha[20:44, 60:76].min() == 255  # transparent half kept, not black


def test_corpus_16bit_png(tmp_path, tiny_model_path):
    out, _ = _run_ok(bad_corpus(tmp_path)["png16"], tiny_model_path)
    px = read_png16(out)
    assert px.dtype == np.uint16 and px.shape == (64, 80, 3)
    assert np.any(px % 257 != 0)  # real 16-bit values, not 8-bit ones scaled up


def test_corpus_exif_rotated_jpeg(tmp_path, tiny_model_path):
    out, _ = _run_ok(bad_corpus(tmp_path)["exif_rotated"], tiny_model_path)
    im = Image.open(out)
    assert im.size == (64, 96)  # stored 24x16 sideways, orientation 6 -> upright 16x24, x4
    exif = im.getexif()
    assert exif.get(0x0112) == 1 and exif.get(0x010F) == "HitokCam"


def test_corpus_unicode_name(tmp_path, tiny_model_path):
    out, _ = _run_ok(bad_corpus(tmp_path)["unicode_name"], tiny_model_path)
    assert out.name == "фото 写真 ü_x4.png" and Image.open(out).size == (80, 64)


def test_corpus_animated_gif_first_frame_with_warning(tmp_path, tiny_model_path):
    out, stderr = _run_ok(bad_corpus(tmp_path)["animated_gif"], tiny_model_path)
    assert out.name == "anim_x4.png" and "only the first frame" in stderr


def test_corpus_grey_stays_grey_and_icc_is_copied(tmp_path, tiny_model_path):
    out, _ = _run_ok(bad_corpus(tmp_path)["grey"], tiny_model_path)
    assert Image.open(out).mode == "L"
    src, icc = tmp_path / "icc.png", srgb_icc()  # (the profile embeds its creation time: make it once)
    Image.fromarray(smooth_rgb(8, 8)).save(src, icc_profile=icc)
    out, _ = _run_ok(src, tiny_model_path)
    assert Image.open(out).info.get("icc_profile") == icc


def test_corpus_unwritable_output(tmp_path, tiny_model_path):
    src = save_png(tmp_path / "p.png", smooth_rgb(8, 8))
    (tmp_path / "blocker").write_text("a file, not a folder")
    result = hitok("upscale", src, "--model", tiny_model_path, "-o", tmp_path / "blocker" / "out.png")
    assert result.exit_code == 1 and "not a folder" in one_error_line(result)
    assert files_in(tmp_path) == ["blocker", "p.png"]


@pytest.mark.parametrize("bits", [8, 16])
def test_tagged_tiff_round_trips_through_upscale_and_batch(tmp_path, tiny_model_path, bits):
    """A Software tag once made every TIFF write fail after the whole upscale."""
    from test_imageio import TAGS, tagged_tiff

    src = tmp_path / "in"
    src.mkdir()
    tagged_tiff(src / "scan.tif", bits)
    result = hitok("upscale", src / "scan.tif", "--model", tiny_model_path, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["bits"] == bits
    batch = hitok("batch", src, tmp_path / "out", "--model", tiny_model_path, "--glob", "scan.tif")
    assert batch.exit_code == 0, batch.output
    for out in (src / "scan_x4.tif", tmp_path / "out" / "scan.tif"):
        im = Image.open(out)
        assert im.size == (64, 48) and im.tag_v2[258][0] == bits
        assert {t: im.getexif().get(t) for t in TAGS} == TAGS


# -- batch -----------------------------------------------------------------------------------------
def _photo_tree(root: Path) -> Path:
    src = root / "in"
    (src / "sub" / "deeper").mkdir(parents=True)
    save_png(src / "a.png", smooth_rgb(12, 16, seed=1))
    exif_rotated_jpeg(src / "b.jpg")
    save_png(src / "sub" / "c.png", smooth_rgb(16, 12, seed=2))
    save_png(src / "sub" / "deeper" / "d.png", smooth_rgb(8, 8, seed=3))
    (src / "sub" / "broken.jpg").write_text("not a jpeg")
    (src / "notes.txt").write_text("ignored: not an image suffix")
    return src


def test_batch_recursive_mirror_summary_and_resume(tmp_path, tiny_model_path):
    src, dst = _photo_tree(tmp_path), tmp_path / "out"
    result = hitok("batch", src, dst, "--recursive", "--model", tiny_model_path)
    assert result.exit_code == 1  # one file failed
    assert files_in(dst) == ["a.png", "b.jpg", "sub/c.png", "sub/deeper/d.png"]
    assert "failed" in result.stdout and "broken.jpg" in result.stdout and "not an image" in result.stdout
    assert "done 4" in result.stdout and "failed 1" in result.stdout
    assert Image.open(dst / "b.jpg").size == (64, 96)

    refused = hitok("batch", src, dst, "--recursive", "--model", tiny_model_path)
    assert refused.exit_code == 1 and "--skip-existing" in one_error_line(refused)

    resumed = hitok("batch", src, dst, "--recursive", "--skip-existing", "--model", tiny_model_path, "--json")
    summary = json.loads(resumed.stdout)
    assert resumed.exit_code == 1 and (summary["done"], summary["skipped"], summary["failed"]) == (0, 4, 1)
    reasons = {f["file"]: f["reason"] for f in summary["files"]}
    assert reasons["a.png"] == "output exists (same settings)" and "not an image" in reasons["sub/broken.jpg"]


def test_batch_glob_non_recursive_and_format(tmp_path, tiny_model_path):
    src, dst = _photo_tree(tmp_path), tmp_path / "out"
    result = hitok("batch", src, dst, "--glob", "*.PNG", "--format", "webp", "--model", tiny_model_path)
    assert result.exit_code == 0, result.output
    assert files_in(dst) == ["a.webp"]
    assert "done 1" in result.stdout
    before = (dst / "a.webp").stat().st_mtime_ns
    again = hitok("batch", src, dst, "--glob", "*.png", "--format", "webp", "--overwrite", "--model", tiny_model_path)
    assert again.exit_code == 0 and (dst / "a.webp").stat().st_mtime_ns != before


def test_batch_refuses_in_place_and_empty(tmp_path, tiny_model_path):
    src = _photo_tree(tmp_path)
    assert "OUT_DIR is IN_DIR" in one_error_line(hitok("batch", src, src, "--model", tiny_model_path))
    (tmp_path / "empty").mkdir()
    assert "no images found" in one_error_line(hitok("batch", tmp_path / "empty", tmp_path / "o",
                                                     "--model", tiny_model_path))


def test_batch_two_workers(tmp_path, tiny_model_path):
    src, dst = _photo_tree(tmp_path), tmp_path / "out"
    result = hitok("batch", src, dst, "-r", "--devices", "cpu,cpu", "--model", tiny_model_path)
    assert result.exit_code == 1 and "2 worker(s)" in result.stdout
    assert files_in(dst) == ["a.png", "b.jpg", "sub/c.png", "sub/deeper/d.png"]


def test_batch_ctrl_c_leaves_no_partial_file_and_resumes(tmp_path, tiny_model_path, monkeypatch):
    src, dst = _photo_tree(tmp_path), tmp_path / "out"
    real = Upscaler.tile_fn
    interrupt_on_tile(monkeypatch, call=2)
    result = hitok("batch", src, dst, "-r", "--tile", 64, "--model", tiny_model_path)
    assert result.exit_code == 130 and "--skip-existing" in one_error_line(result, progress_bar=True)
    assert files_in(dst) == ["a.png"]  # the file in flight was never written, no temp file
    monkeypatch.setattr(Upscaler, "tile_fn", real)
    resumed = hitok("batch", src, dst, "-r", "--skip-existing", "--model", tiny_model_path)
    assert "skipped 1" in resumed.stdout and "done 3" in resumed.stdout
    assert files_in(dst) == ["a.png", "b.jpg", "sub/c.png", "sub/deeper/d.png"]


# -- tokenize / detokenize -------------------------------------------------------------------------
@pytest.mark.parametrize("source", ["hr", "lr"])
def test_tokenize_preview_and_detokenize_agree(tmp_path, tiny_model_path, source):
    src = save_png(tmp_path / "p.png", smooth_rgb(20, 28))
    codes, preview = tmp_path / "codes.safetensors", tmp_path / "preview.png"
    result = hitok("tokenize", src, "--out", codes, "--preview", preview, "--source", source,
                   "--model", tiny_model_path)
    assert result.exit_code == 0, result.output
    assert "perplexity" in result.stdout and "codes used" in result.stdout

    stored = load_file(str(codes))["indices"]
    from safetensors import safe_open

    with safe_open(str(codes), "pt") as f:
        meta = f.metadata()
    size = (28, 20) if source == "hr" else (112, 80)
    grid = (3, 4) if source == "hr" else (10, 14)  # p=8 HR px per token; LR 2 px per token
    assert stored.dtype == torch.uint16 and tuple(stored.shape) == (2, *grid)
    assert meta["source"] == source and (meta["groups"], meta["codebook_size"]) == ("2", "16")
    assert (int(meta["image_width"]), int(meta["image_height"])) == size
    assert meta["model_id"] == model_store.model_id(tiny_model_path)

    out = tmp_path / "decoded.png"
    result = hitok("detokenize", codes, "-o", out, "--model", tiny_model_path)
    assert result.exit_code == 0, result.output
    assert "(detail 2 of 2 groups)" in result.stdout
    decoded = np.asarray(Image.open(out))
    sheet = Image.open(preview)
    assert sheet.size[0] == 3 * size[0] + 2 * 4  # input | detail 1 | detail 2
    assert np.array_equal(np.asarray(sheet.crop(panel_box(2, *size))), decoded)
    assert not np.array_equal(np.asarray(sheet.crop(panel_box(1, *size))), decoded)  # detail 1 is coarser


def test_detokenize_refuses_another_model_and_bad_dumps(tmp_path, tiny_model_path):
    from hitok.models import HiTok, presets, save_model

    src = save_png(tmp_path / "p.png", smooth_rgb(16, 16))
    codes = tmp_path / "c.safetensors"
    assert hitok("tokenize", src, "--out", codes, "--model", tiny_model_path).exit_code == 0
    torch.manual_seed(1)
    other = tmp_path / "other.safetensors"
    save_model(HiTok(presets.tiny()), other)
    result = hitok("detokenize", codes, "--model", other)
    assert result.exit_code == 1 and "made with model" in one_error_line(result)
    assert "not a hitok token dump" in one_error_line(hitok("detokenize", tiny_model_path, "-o", tmp_path / "x.png",
                                                            "--model", tiny_model_path))
    assert not (tmp_path / "x.png").exists()


def test_tokenize_hr_needs_an_encoder(tmp_path):
    from hitok.models import HiTok, presets, save_model

    no_enc = tmp_path / "noenc.safetensors"
    save_model(HiTok(presets.tiny(), with_encoder=False), no_enc)
    src = save_png(tmp_path / "p.png", smooth_rgb(16, 16))
    result = hitok("tokenize", src, "--model", no_enc)
    assert result.exit_code == 1 and "--source lr" in one_error_line(result)
    assert hitok("tokenize", src, "--model", no_enc, "--source", "lr").exit_code == 0


# -- models ----------------------------------------------------------------------------------------
def test_models_add_list_and_use_by_name(tmp_path, tiny_model_path, user_models):
    result = hitok("models", "add", tiny_model_path, "--name", "tiny1")
    assert result.exit_code == 0, result.output
    assert (user_models / "tiny1.safetensors").is_file()
    listed = hitok("models", "list", "--json")
    entries = {e["name"]: e for e in json.loads(listed.stdout)}
    assert entries["tiny1"]["source"] == "user" and "N=2 K=16" in entries["tiny1"]["summary"]
    assert entries["tiny1"]["id"] == model_store.model_id(tiny_model_path)
    assert "tiny1" in hitok("models", "list").stdout
    again = hitok("models", "add", tiny_model_path, "--name", "tiny1")
    assert again.exit_code == 1 and "--overwrite" in one_error_line(again)
    assert "not allowed" in one_error_line(hitok("models", "add", tiny_model_path, "--name", "default"))
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"junk")
    assert hitok("models", "add", junk).exit_code == 1
    assert files_in(user_models) == ["tiny1.safetensors"]
    src = save_png(tmp_path / "p.png", smooth_rgb(8, 8))
    assert hitok("upscale", src, "--model", "tiny1").exit_code == 0


def test_batch_summary_folds_many_alike_skips_into_one_row(tmp_path, tiny_model_path):
    src, dst = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    for i in range(5):
        save_png(src / f"p{i}.png", smooth_rgb(8, 8, seed=i))
    assert hitok("batch", src, dst, "--model", tiny_model_path).exit_code == 0
    again = hitok("batch", src, dst, "--skip-existing", "--model", tiny_model_path)
    assert again.exit_code == 0 and "skipped 5" in again.stdout
    assert "5 files" in again.stdout and "p3.png" not in again.stdout  # one row, not five


def test_cpu_auto_precision_is_bf16_only_with_amx(monkeypatch):
    from hitok import device as device_lib

    cpu = torch.device("cpu")
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True, raising=False)
    monkeypatch.delenv("HITOK_CPU_FP32", raising=False)
    assert device_lib.resolve_precision("auto", cpu) == torch.bfloat16
    monkeypatch.setenv("HITOK_CPU_FP32", "1")
    assert device_lib.resolve_precision("auto", cpu) == torch.float32
    monkeypatch.delenv("HITOK_CPU_FP32")
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)
    assert device_lib.resolve_precision("auto", cpu) == torch.float32
    assert device_lib.resolve_precision("bf16", cpu) == torch.bfloat16  # asked for, always given


def test_cpu_upscaler_runs_channels_last_with_unchanged_output(tiny_model_path):
    from hitok.models import load_model_file

    plain = load_model_file(tiny_model_path)
    up = Upscaler(load_model_file(tiny_model_path), torch.device("cpu"), torch.float32)
    conv = next(m for m in up.model.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    lr = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(3))
    with torch.inference_mode():
        ref = plain.upscale(lr, color_fix=True)
    assert torch.allclose(up.tile_fn(lr), ref, atol=1e-5)
