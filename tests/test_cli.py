"""The `genad demo` job end to end on a real data set."""

from __future__ import annotations

import re
import struct

from pipelines.cli import main


def png_size(path) -> tuple[int, int]:
    header = path.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG file"
    return struct.unpack(">II", header[16:24])


def test_demo_reports_auroc_top_rows_and_plot(data_env, tmp_path, capsys):
    plot = tmp_path / "scores.png"
    args = ["demo", "--dataset", "adbench/breastw", "--epochs", "40", "--n-samples", "16"]
    assert main([*args, "--top", "5", "--plot", str(plot)]) == 0
    out = capsys.readouterr().out
    auroc = float(re.search(r"AUROC (\d\.\d+)", out).group(1))
    assert auroc > 0.9  # breastw: 72 anomalies vs 133 normal test rows; chance sd ~0.04
    top_rows = re.findall(r"^\s+\d+\s+-?\d+\.\d+\s+(anomaly|normal)$", out, flags=re.MULTILINE)
    assert len(top_rows) == 5
    assert png_size(plot) == (770, 440)  # 7 x 4 inches at 110 dpi
