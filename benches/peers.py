#!/usr/bin/env python3
"""The Python peers of scripts/bench.sh; each subcommand prints one JSON line.

  ort-extract MODEL.onnx DIR        onnxruntime + Pillow over the photos of DIR (crop/resize/normalise as
                                    the model's metadata says), e2e img/s and inference-only img/s
  keras-extract DIR                 Keras 3 VGG16(weights=None, include_top=False), image_dataset_from_directory
  torch-extract DIR                 torchvision vgg16().features, ImageFolder + DataLoader
  torch-head FEATURES.h5 EPOCHS     the seed head in PyTorch (Flatten, Dense 256 relu, Dropout .5, sigmoid),
                                    RMSprop(lr 2e-5, alpha .9, eps 1e-7 as Keras), batch 20
  assignment MODEL.onnx DATA        extract train+test with onnxruntime + Pillow, train a sklearn
                                    LogisticRegression, test accuracy, wall seconds
"""
import glob, json, os, sys, time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import numpy as np


def photos(d):
    return sorted(glob.glob(os.path.join(d, "**", "*.jpg"), recursive=True))


def ort_session(model):
    import onnxruntime as ort
    s = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    return s, s.get_modelmeta().custom_metadata_map


def ort_preprocess(path, meta, shape):
    from PIL import Image
    nchw = shape[1] == 3
    h, w = (shape[2], shape[3]) if nchw else (shape[1], shape[2])
    img = Image.open(path).convert("RGB")
    box = None
    if meta.get("resize_mode") == "crop":
        s = min(img.size) * float(meta.get("crop_fraction", 0.875))
        l, t = (img.width - s) / 2, (img.height - s) / 2
        box = (l, t, l + s, t + s)
    interp = Image.BICUBIC if meta.get("interpolation") == "bicubic" else Image.BILINEAR
    x = np.asarray(img.resize((w, h), interp, box=box), np.float32)
    if meta.get("color_order", "RGB").upper() == "BGR":
        x = x[..., ::-1]
    mean = np.array([float(v) for v in meta.get("mean", "0,0,0").split(",")], np.float32)
    std = np.array([float(v) for v in meta.get("std", "1,1,1").split(",")], np.float32)
    x = (x - mean) / std
    return x.transpose(2, 0, 1) if nchw else x


def ort_features(model, files, batch=32):
    s, meta = ort_session(model)
    inp = s.get_inputs()[0]
    shape = [d if isinstance(d, int) else 1 for d in inp.shape]
    feats, infer = [], 0.0
    for i in range(0, len(files), batch):
        x = np.stack([ort_preprocess(p, meta, shape) for p in files[i:i + batch]])
        t = time.perf_counter()
        feats.append(s.run(None, {inp.name: x})[0])
        infer += time.perf_counter() - t
    return np.concatenate(feats), infer


def ort_extract(model, d):
    files = photos(d)
    t = time.perf_counter()
    _, infer = ort_features(model, files)
    secs = time.perf_counter() - t
    return {"tool": "onnxruntime-python", "images": len(files), "e2e_img_s": len(files) / secs,
            "infer_img_s": len(files) / infer}


def keras_extract(d):
    import keras
    import tensorflow as tf
    model = keras.applications.VGG16(weights=None, include_top=False, input_shape=(224, 224, 3))
    ds = keras.utils.image_dataset_from_directory(d, image_size=(224, 224), batch_size=32, shuffle=False, labels=None)
    ds = ds.map(keras.applications.vgg16.preprocess_input).prefetch(tf.data.AUTOTUNE)
    n = sum(1 for _ in photos(d))
    t = time.perf_counter()
    model.predict(ds, verbose=0)
    secs = time.perf_counter() - t
    x = np.random.rand(32, 224, 224, 3).astype(np.float32)
    model.predict(x, verbose=0)
    t = time.perf_counter()
    for _ in range(4):
        model.predict(x, verbose=0)
    inf = time.perf_counter() - t
    return {"tool": "keras", "images": n, "e2e_img_s": n / secs, "infer_img_s": 128 / inf}


def torch_extract(d):
    import torch, torchvision
    from torchvision import transforms as T
    torch.manual_seed(0)
    net = torchvision.models.vgg16().features.eval()
    tf = T.Compose([T.Resize((224, 224)), T.ToTensor(), T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])
    ds = torchvision.datasets.ImageFolder(d, transform=tf)
    dl = torch.utils.data.DataLoader(ds, batch_size=32, num_workers=2)
    t = time.perf_counter()
    with torch.inference_mode():
        for x, _ in dl:
            net(x)
    secs = time.perf_counter() - t
    x = torch.rand(32, 3, 224, 224)
    with torch.inference_mode():
        net(x)
        t = time.perf_counter()
        for _ in range(4):
            net(x)
    inf = time.perf_counter() - t
    return {"tool": "pytorch", "images": len(ds), "e2e_img_s": len(ds) / secs, "infer_img_s": 128 / inf}


def torch_head(features, epochs):
    import h5py, torch
    torch.manual_seed(42)
    with h5py.File(features, "r") as f:
        x = torch.from_numpy(f["train/features"][()].reshape(len(f["train/labels"]), -1))
        y = torch.from_numpy(f["train/labels"][()].astype(np.float32))
        vx = torch.from_numpy(f["val/features"][()].reshape(len(f["val/labels"]), -1))
        vy = torch.from_numpy(f["val/labels"][()].astype(np.float32))
    net = torch.nn.Sequential(torch.nn.Linear(x.shape[1], 256), torch.nn.ReLU(), torch.nn.Dropout(0.5), torch.nn.Linear(256, 1))
    opt = torch.optim.RMSprop(net.parameters(), lr=2e-5, alpha=0.9, eps=1e-7)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    t = time.perf_counter()
    val_loss = []
    for _ in range(epochs):
        net.train()
        perm = torch.randperm(len(x))
        for i in range(0, len(x), 20):
            idx = perm[i:i + 20]
            opt.zero_grad()
            loss = loss_fn(net(x[idx]).squeeze(1), y[idx])
            loss.backward()
            opt.step()
        net.eval()
        with torch.no_grad():
            val_loss.append(float(loss_fn(net(vx).squeeze(1), vy)))
    return {"tool": "pytorch", "seconds": time.perf_counter() - t, "val_loss": val_loss}


def assignment(model, data):
    from sklearn.linear_model import LogisticRegression
    t = time.perf_counter()
    tr = photos(os.path.join(data, "train"))
    te = photos(os.path.join(data, "test"))
    xtr, _ = ort_features(model, tr)
    xte, _ = ort_features(model, te)
    ytr = np.array([p.split(os.sep)[-2] == "dog" for p in tr])
    yte = np.array([p.split(os.sep)[-2] == "dog" for p in te])
    clf = LogisticRegression(C=1.0, max_iter=1000).fit(xtr.reshape(len(xtr), -1), ytr)
    acc = float(clf.score(xte.reshape(len(xte), -1), yte))
    return {"tool": "python (onnxruntime + Pillow + sklearn)", "seconds": time.perf_counter() - t, "test_accuracy": acc}


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    out = {"ort-extract": lambda: ort_extract(*args), "keras-extract": lambda: keras_extract(*args),
           "torch-extract": lambda: torch_extract(*args),
           "torch-head": lambda: torch_head(args[0], int(args[1])),
           "assignment": lambda: assignment(*args)}[cmd]()
    print(json.dumps(out))
