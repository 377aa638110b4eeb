"""Reference for `headstart quantize`: ONNX Runtime's own static QDQ quantiser on the same model and
calibration photos (per-channel int8 weights, uint8 activations, MinMax), run by
scripts/bench_int8.sh. Preprocessing: caffe (VGG) or tf-like (x - 127) / 128 (EfficientNet-Lite0),
resize of the whole photo to 224x224, which is close enough for calibration ranges.
Usage: python benches/ort_quantize.py MODEL PHOTO_DIR N MODE OUT   (MODE: caffe | lite0)"""
import os
import sys

import numpy as np
from PIL import Image
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

model, photos, n, mode, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5]
files = sorted(os.path.join(r, f) for r, _, fs in os.walk(photos) for f in fs if f.lower().endswith(".jpg"))
files = [files[i * len(files) // n] for i in range(n)]


def tensor(path):
    x = np.asarray(Image.open(path).convert("RGB").resize((224, 224), Image.BILINEAR), dtype=np.float32)
    if mode == "caffe":
        x = x[..., ::-1] - np.array([103.939, 116.779, 123.68], dtype=np.float32)
    else:
        x = (x - 127.0) / 128.0
    return x.transpose(2, 0, 1)[None]


class Reader(CalibrationDataReader):
    def __init__(self):
        self.it = iter({"input": tensor(f)} for f in files)

    def get_next(self):
        return next(self.it, None)


quantize_static(model, out, Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
print(f"ort quantize_static: {out}")
