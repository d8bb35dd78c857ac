"""The main job: `probgen tour` writes a complete report (quick mode keeps it short)."""
import re

import pytest

from probgen.cli import main


def test_tour_quick_writes_report(tmp_path, capsys):
    out = tmp_path / "tour"
    assert main(["tour", "--out", str(out), "--quick", "--no-progress", "--seed", "1"]) == 0
    index = out / "index.html"
    assert index.is_file()
    page = index.read_text(encoding="utf-8")
    # every figure the page shows exists and is a non-empty PNG
    images = re.findall(r"<img src='([^']+)'", page)
    assert images
    for name in images:
        png = out / name
        assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the table holds finite numbers only
    numbers = re.findall(r"<td class='num'>([^<]*)</td>", page)
    assert numbers
    for cell in numbers:
        if cell:
            float(cell)  # raises on 'nan' text? float('nan') parses, so check explicitly
            assert cell.lower() not in ("nan", "inf", "-inf")
    # every model of the project is in the report (the complete tour)
    for model in ("Gaussian mixture", "PPCA", "Markov chain", "FVSBN", "NADE", "PixelCNN", "PixelRNN",
                  "VAE (z=8", "Hierarchical VAE", "VQ-VAE", "autoencoder", "GAN"):
        assert model.lower() in page.lower(), model
    assert "wrote" in capsys.readouterr().out


def test_tour_refuses_a_file_as_out(tmp_path):
    target = tmp_path / "a_file"
    target.write_text("x")
    with pytest.raises(ValueError, match="out must be a directory"):
        main(["tour", "--out", str(target), "--quick", "--no-progress"])


def test_cli_requires_a_command(capsys):
    with pytest.raises(SystemExit):
        main([])
