"""OpenCV's version of tilepipe's operations, for tests and benchmarks.

    opencv_reference.py apply WIDTH HEIGHT CHAIN_JSON IN.rgb OUT.rgb
        Applies the chain (tilepipe's JSON operations) to a raw RGB8 image.
    opencv_reference.py bench WIDTH HEIGHT IN.rgb
        Prints the best single-thread MP/s of GaussianBlur(51x51, sigma 0).
    opencv_reference.py job IN.jpg OUT.jpg
        The whole job as one OpenCV process would do it, on all cores: read,
        GaussianBlur((51, 51), 0), write JPEG q90. Prints the seconds taken
        (without the interpreter's start).

Borders are reflect-101, OpenCV's default and tilepipe's rule.
"""
import json
import sys
import time

import cv2
import numpy as np

REFLECT = cv2.BORDER_REFLECT_101


def luma(img):
    return cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)


def gray3(plane):
    return cv2.merge([plane, plane, plane])


def apply(img, op):
    name = op["op"]
    if name == "gaussian_blur":
        k = op["kernel"]
        return cv2.GaussianBlur(img, (k, k), op.get("sigma") or 0, borderType=REFLECT)
    if name == "box_blur":
        k = op["kernel"]
        return cv2.blur(img, (k, k), borderType=REFLECT)
    if name == "sharpen":
        k = 2 * op["radius"] + 1
        blurred = cv2.GaussianBlur(img, (k, k), 0, borderType=REFLECT).astype(np.float32)
        p = img.astype(np.float32)
        return np.clip(np.rint(p + op["amount"] * (p - blurred)), 0, 255).astype(np.uint8)
    if name == "edge_detect":
        g = luma(img)
        gx = cv2.Sobel(g, cv2.CV_32F, 1, 0, ksize=3, borderType=REFLECT)
        gy = cv2.Sobel(g, cv2.CV_32F, 0, 1, ksize=3, borderType=REFLECT)
        return gray3(np.clip(np.rint(cv2.magnitude(gx, gy)), 0, 255).astype(np.uint8))
    if name == "grayscale":
        return gray3(luma(img))
    if name == "invert":
        return cv2.bitwise_not(img)
    if name == "brightness_contrast":
        p = img.astype(np.float32) * op["contrast"] + op["brightness"]
        return np.clip(np.rint(p), 0, 255).astype(np.uint8)
    raise SystemExit(f"unknown operation {name}")


def read(path, w, h):
    return np.fromfile(path, dtype=np.uint8).reshape(h, w, 3)


def main():
    if sys.argv[1:2] == ["job"]:
        t = time.perf_counter()
        img = cv2.imread(sys.argv[2], cv2.IMREAD_COLOR)
        blurred = cv2.GaussianBlur(img, (51, 51), 0)
        cv2.imwrite(sys.argv[3], blurred, [cv2.IMWRITE_JPEG_QUALITY, 90])
        print(f"{time.perf_counter() - t:.4f}")
        return
    cmd, w, h = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    cv2.setNumThreads(1)
    if cmd == "apply":
        img = read(sys.argv[5], w, h)
        for op in json.loads(sys.argv[4]):
            img = apply(img, op)
        np.ascontiguousarray(img).tofile(sys.argv[6])
    elif cmd == "bench":
        img = read(sys.argv[4], w, h)
        best = float("inf")
        for _ in range(3):
            t = time.perf_counter()
            cv2.GaussianBlur(img, (51, 51), 0, borderType=REFLECT)
            best = min(best, time.perf_counter() - t)
        print(f"{w * h / 1e6 / best:.1f}")
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main()
