"""Crop the MRMS series (``../shared/data/mrms-hourly/mrms_hourly_series.nc``) to a centre
window that keeps whole low-res blocks, so the real-data run of the standard profile fits
2 CPU cores (the full 156 x 132 tile costs ~30 min per fine-tune epoch here).

    python bench/crop_mrms.py OUT.nc [--lr_rows 3:9] [--lr_cols 3:8]

Default: low-res blocks rows 3..8, cols 3..7 -> 72 x 60 high-res pixels (12x12 per block).
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

import xarray as xr

SERIES = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "mrms-hourly" \
    / "mrms_hourly_series.nc"


def _span(text: str) -> slice:
    a, b = (int(v) for v in text.split(":"))
    return slice(a, b)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", type=Path)
    p.add_argument("--source", type=Path, default=SERIES)
    p.add_argument("--lr_rows", type=_span, default=_span("3:9"))
    p.add_argument("--lr_cols", type=_span, default=_span("3:8"))
    a = p.parse_args()
    with xr.open_dataset(a.source) as ds:
        r = ds.sizes["y"] // ds.sizes["y_lr"]
        rows, cols = a.lr_rows, a.lr_cols
        crop = ds.isel(y_lr=rows, x_lr=cols, y=slice(rows.start * r, rows.stop * r),
                       x=slice(cols.start * r, cols.stop * r)).load()
    tmp = a.out.with_suffix(".tmp.nc")
    crop.to_netcdf(tmp)
    os.replace(tmp, a.out)  # nothing half-written
    print(f"{a.out}: {dict(crop.sizes)}")


if __name__ == "__main__":
    main()
