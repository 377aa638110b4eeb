"""PyTorch's reference for `scripts/gpu_check.sh` (ONLY=bind): VGG-16's conv base (random weights,
as headstart's `make-model vgg16`) in float16 and float32, channels_last, timed two ways in the
same call: on the device alone (the input already there), and with the host-to-device copy of the
same float32 batch from pinned memory plus the features' copy back, as headstart's numbers are.

usage: python3 gpu_torch_ref.py OUT.json [BATCH ...]
"""
import json
import sys
import time

import torch
from torch import nn


def vgg16_base():
    layers, c = [], 3
    for v in [64, 64, 0, 128, 128, 0, 256, 256, 256, 0, 512, 512, 512, 0, 512, 512, 512, 0]:
        if v == 0:
            layers.append(nn.MaxPool2d(2))
        else:
            layers += [nn.Conv2d(c, v, 3, padding=1), nn.ReLU(inplace=True)]
            c = v
    return nn.Sequential(*layers).eval()


def timed(step, images, bs, dev):
    for _ in range(5):
        step()
    if dev == "cuda":
        torch.cuda.synchronize()
    t, n = time.perf_counter(), 0
    while n < images:
        step()
        n += bs
    if dev == "cuda":
        torch.cuda.synchronize()
    return round(n / (time.perf_counter() - t), 1)


def main():
    out = sys.argv[1]
    batches = [int(b) for b in sys.argv[2:]] or [128, 256]
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    images = 4096 if dev == "cuda" else 16
    torch.backends.cudnn.benchmark = True
    res = {"torch": torch.__version__, "device": dev,
           "gpu": torch.cuda.get_device_name(0) if dev == "cuda" else None,
           "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32}
    net = vgg16_base().to(dev)
    for dtype in ([torch.float16, torch.float32] if dev == "cuda" else [torch.float32]):
        m = net.to(dtype=dtype, memory_format=torch.channels_last)
        name = str(dtype).split(".")[-1]
        for bs in (batches if dev == "cuda" else [8]):
            host = torch.randn(bs, 3, 224, 224).pin_memory() if dev == "cuda" else torch.randn(bs, 3, 224, 224)
            x = host.to(dev).to(dtype=dtype, memory_format=torch.channels_last)
            with torch.inference_mode():
                res[f"vgg16_{name}_b{bs}_device_only_img_s"] = timed(lambda: m(x), images, bs, dev)

                def with_copies():
                    xd = host.to(dev, non_blocking=True).to(dtype=dtype, memory_format=torch.channels_last)
                    return m(xd).float().cpu()

                res[f"vgg16_{name}_b{bs}_with_copies_img_s"] = timed(with_copies, images, bs, dev)
    json.dump(res, open(out, "w"), indent=1)
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
