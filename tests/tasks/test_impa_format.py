import numpy as np
import pandas as pd
import pytest

from benchmark.errors import BenchmarkError
from tasks.impa_format import bbbc021_path, check_crop_header, cpg0000_path, load_crop, read_metadata, rxrx1_path


def test_sample_key_rules_follow_the_published_layouts():
    assert bbbc021_path("Week1_22123_1_11_3.0") == "Week1/22123/1_11_3.0.npy"
    assert cpg0000_path("BR00116999_L03_6_93") == "BR00116999/L03_6/L03_6_93.npy"
    assert rxrx1_path("U2OS-01_1_B02_s1_17") == "01_1/B02/s1_17.npy"
    with pytest.raises(ValueError):
        rxrx1_path("nonsense")


def write_meta(path, **overrides):
    df = pd.DataFrame({"SAMPLE_KEY": ["Week1_P1_1_1_1.0", "Week1_P1_1_1_2.0"], "BATCH": "Week1_P1", "PLATE": "P1",
                       "CPD_NAME": ["DMSO", "taxol"], "ANNOT": ["DMSO", "Microtubule stabilizers"],
                       "STATE": [0, 1], "SPLIT": ["train", "test"]})
    for k, v in overrides.items():
        if v is None:
            df = df.drop(columns=k)
        else:
            df[k] = v
    df.to_csv(path)
    return path


def test_state_as_integer_or_string_is_accepted(tmp_path):
    assert read_metadata(write_meta(tmp_path / "a.csv"))["STATE"].tolist() == ["control", "trt"]
    assert read_metadata(write_meta(tmp_path / "b.csv", STATE=["control", "trt"]))["STATE"].tolist() == ["control", "trt"]


def test_missing_column_is_named(tmp_path):
    with pytest.raises(BenchmarkError, match=r"b.csv: missing column 'SPLIT'"):
        read_metadata(write_meta(tmp_path / "b.csv", SPLIT=None))


def test_bad_state_and_split_values_are_named(tmp_path):
    with pytest.raises(BenchmarkError, match="STATE has value 'maybe'"):
        read_metadata(write_meta(tmp_path / "c.csv", STATE=["control", "maybe"]))
    with pytest.raises(BenchmarkError, match="SPLIT 'valid'; expected train, test, val"):
        read_metadata(write_meta(tmp_path / "d.csv", SPLIT=["train", "valid"]))
    with pytest.raises(BenchmarkError) as e:  # an integer column: the message shows 2, not np.int64(2)
        read_metadata(write_meta(tmp_path / "e.csv", STATE=[0, 2]))
    assert "column STATE has value 2;" in str(e.value) and "np." not in str(e.value)


def test_bad_crops_are_named(tmp_path):
    good = tmp_path / "good.npy"
    np.save(good, np.zeros((8, 8, 3), np.uint8))
    assert load_crop(good, (8, 8, 3)).shape == (8, 8, 3)
    with pytest.raises(BenchmarkError, match=r"good.npy: crop has shape \(8, 8, 3\); expected \(8, 8, 5\)"):
        load_crop(good, (8, 8, 5))
    nan = tmp_path / "nan.npy"
    np.save(nan, np.full((8, 8, 3), np.nan, np.float32))
    with pytest.raises(BenchmarkError, match="nan.npy: crop contains NaN"):
        load_crop(nan, (8, 8, 3))
    trunc = tmp_path / "trunc.npy"
    trunc.write_bytes(good.read_bytes()[:100])
    with pytest.raises(BenchmarkError, match="trunc.npy: unreadable .npy"):
        load_crop(trunc, (8, 8, 3))
    with pytest.raises(BenchmarkError, match="Week1/P1/1_1_1.0.npy: crop file not found"):
        load_crop(tmp_path / bbbc021_path("Week1_P1_1_1_1.0"), (8, 8, 3))


def test_crop_headers_are_checked_without_reading_the_pixels(tmp_path):
    good = tmp_path / "good.npy"
    np.save(good, np.zeros((8, 8, 3), np.uint8))
    check_crop_header(good, (8, 8, 3))
    with pytest.raises(BenchmarkError, match=r"good.npy: crop has shape \(8, 8, 3\); expected \(8, 8, 5\)"):
        check_crop_header(good, (8, 8, 5))
    floats = tmp_path / "floats.npy"
    np.save(floats, np.zeros((8, 8, 3), np.float32))
    with pytest.raises(BenchmarkError, match="floats.npy: crop has dtype float32; expected uint8"):
        check_crop_header(floats, (8, 8, 3))
    data = good.read_bytes()
    short = tmp_path / "short.npy"
    short.write_bytes(data[:-1])  # one pixel byte missing: the header alone is intact
    with pytest.raises(BenchmarkError, match=f"short.npy: truncated .npy: {len(data) - 1} bytes, its header promises {len(data)}"):
        check_crop_header(short, (8, 8, 3))
    headless = tmp_path / "headless.npy"
    headless.write_bytes(data[:20])
    with pytest.raises(BenchmarkError, match="headless.npy: unreadable .npy"):
        check_crop_header(headless, (8, 8, 3))
    with pytest.raises(BenchmarkError, match="missing.npy: crop file not found"):
        check_crop_header(tmp_path / "missing.npy", (8, 8, 3))
