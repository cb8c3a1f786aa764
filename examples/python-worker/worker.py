#!/usr/bin/env python3
"""A tilepipe worker in Python, written from docs/protocol.md (version 1).

It joins the workers' consumer group, processes each task's chain with
NumPy and OpenCV, and publishes PNG results. Run it beside (or instead of)
the Rust workers:

    TILEPIPE_BROKERS=127.0.0.1:9092 python3 examples/python-worker/worker.py

and check it with the conformance kit:

    cargo run --release -p conformance -- --worker "tools/venv/bin/python examples/python-worker/worker.py"
"""

import json
import math
import os
import platform
import resource
import signal
import socket
import struct
import sys
import threading
import time

import cv2
import numpy as np
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka import OFFSET_BEGINNING
from confluent_kafka import version as kafka_version

# Section 10: what a task may claim, at most.
MAX_MESSAGE_BYTES = 32 * 1024 * 1024
MAX_SIDE = 2048
MAX_HALO = 512
MAX_SOURCE_SIDE = 3200
MAX_ID_BYTES = 128
MAX_STEPS = 16
U32 = 2**32 - 1

cv2.setNumThreads(1)  # a tile is the unit of parallelism: run one worker per core


class TaskError(Exception):
    """A task this worker cannot process: reported as a failure (section 6)."""


class Unsupported(TaskError):
    """An operation this worker does not implement: the master sends the
    tile to another worker (section 6, `unsupported`)."""

    def __init__(self, op):
        super().__init__(f"this worker does not implement {op}")
        self.op = op


OPERATIONS = ("gaussian_blur", "box_blur", "sharpen", "edge_detect", "grayscale", "invert", "brightness_contrast")


# --- configuration (section 2) ----------------------------------------------


def kafka_properties():
    """TILEPIPE_KAFKA_SASL_USERNAME=u sets sasl.username=u."""
    props = {}
    for name, value in os.environ.items():
        if name.startswith("TILEPIPE_KAFKA_") and len(name) > len("TILEPIPE_KAFKA_"):
            props[name[len("TILEPIPE_KAFKA_"):].lower().replace("_", ".")] = value
    return props


class Config:
    def __init__(self):
        self.brokers = os.environ.get("TILEPIPE_BROKERS", "127.0.0.1:9092")
        prefix = os.environ.get("TILEPIPE_TOPIC_PREFIX", "")
        self.worker_id = os.environ.get("TILEPIPE_WORKER_ID") or f"{socket.gethostname()}-{os.getpid()}"
        self.heartbeat_secs = max(1.0, float(os.environ.get("TILEPIPE_HEARTBEAT_SECS", "5")))
        # Run only these operations (a partial worker), declining the rest.
        listed = os.environ.get("TILEPIPE_WORKER_OPS", "")
        self.ops = {op.strip() for op in listed.split(",") if op.strip()} or set(OPERATIONS)
        self.tasks = prefix + "tasks"
        self.results = prefix + "results"
        self.heartbeats = prefix + "heartbeats"
        self.control = prefix + "control"
        self.dead_letters = prefix + "dead-letters"
        self.group = prefix + "tilepipe-workers"

    def client(self, **extra):
        props = {"bootstrap.servers": self.brokers}
        props.update(kafka_properties())
        props.update(extra)
        return props


# --- operations (section 5) --------------------------------------------------


def opencv_sigma(kernel):
    return 0.3 * ((kernel - 1) * 0.5 - 1) + 0.8


def check_keys(op, allowed):
    unknown = set(op) - {"op"} - set(allowed)
    if unknown:
        raise TaskError(f"{op['op']}: unknown parameter {sorted(unknown)[0]}")


def number(op, name, low, high, default=None, integer=False, odd=False, low_open=False):
    value = op.get(name, default)
    if value is None:
        raise TaskError(f"{op['op']}.{name} is required")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TaskError(f"{op['op']}.{name} must be a number")
    if integer and (not isinstance(value, int)):
        raise TaskError(f"{op['op']}.{name} must be an integer")
    if not math.isfinite(value) or value > high or value < low or (low_open and value <= low):
        raise TaskError(f"{op['op']}.{name} is out of range: {value}")
    if odd and value % 2 != 1:
        raise TaskError(f"{op['op']}.{name} must be odd, got {value}")
    return value


def parse_op(op, implemented):
    """Checks one operation; returns (name, params, halo)."""
    if not isinstance(op, dict) or not isinstance(op.get("op"), str):
        raise TaskError("an operation is an object with an op")
    name = op["op"]
    if name not in implemented:
        raise Unsupported(name[:64])
    if name in ("gaussian_blur", "box_blur"):
        check_keys(op, ["kernel", "sigma"] if name == "gaussian_blur" else ["kernel"])
        kernel = number(op, "kernel", 3, 255, integer=True, odd=True)
        params = {"kernel": kernel}
        if name == "gaussian_blur":
            sigma = op.get("sigma")
            params["sigma"] = opencv_sigma(kernel) if sigma is None else number(op, "sigma", 0, 100, low_open=True)
        return name, params, kernel // 2
    if name == "sharpen":
        check_keys(op, ["radius", "amount"])
        radius = number(op, "radius", 1, 127, integer=True)
        return name, {"radius": radius, "amount": number(op, "amount", 0, 10)}, radius
    if name == "brightness_contrast":
        check_keys(op, ["brightness", "contrast"])
        return name, {"brightness": number(op, "brightness", -255, 255), "contrast": number(op, "contrast", 0, 10)}, 0
    if name in ("edge_detect", "grayscale", "invert"):
        check_keys(op, [])
        return name, {}, 1 if name == "edge_detect" else 0
    raise Unsupported(name[:64])


def luma(img):
    rgb = img[..., :3].astype(np.uint32)
    return ((9798 * rgb[..., 0] + 19235 * rgb[..., 1] + 3735 * rgb[..., 2] + 16384) >> 15).astype(np.uint8)


def gaussian(img, kernel, sigma):
    return cv2.GaussianBlur(img, (kernel, kernel), sigmaX=sigma, sigmaY=sigma, borderType=cv2.BORDER_REFLECT_101)


def f32_round_saturate(values):
    return np.clip(np.rint(values), 0, 255).astype(np.uint8)


def apply(name, params, img):
    """One step on an H x W x C uint8 frame; returns a new frame."""
    if name == "gaussian_blur":
        return gaussian(img, params["kernel"], params["sigma"])
    if name == "box_blur":
        k = params["kernel"]
        return cv2.blur(img, (k, k), borderType=cv2.BORDER_REFLECT_101)
    out = img.copy()
    if name == "sharpen":
        kernel = 2 * params["radius"] + 1
        blurred = gaussian(img, kernel, opencv_sigma(kernel))[..., :3].astype(np.float32)
        p = img[..., :3].astype(np.float32)
        out[..., :3] = f32_round_saturate(p + np.float32(params["amount"]) * (p - blurred))
    elif name == "edge_detect":
        lum = luma(img).astype(np.int32)
        if lum.shape[0] >= 3 and lum.shape[1] >= 3:
            up, mid, down = lum[:-2], lum[1:-1], lum[2:]
            gx = (up[:, 2:] + 2 * mid[:, 2:] + down[:, 2:]) - (up[:, :-2] + 2 * mid[:, :-2] + down[:, :-2])
            gy = (down[:, :-2] + 2 * down[:, 1:-1] + down[:, 2:]) - (up[:, :-2] + 2 * up[:, 1:-1] + up[:, 2:])
            magnitude = f32_round_saturate(np.sqrt((gx * gx + gy * gy).astype(np.float32)))
            out[1:-1, 1:-1, :3] = magnitude[..., None]
    elif name == "grayscale":
        out[..., :3] = luma(img)[..., None]
    elif name == "invert":
        out[..., :3] = 255 - img[..., :3]
    elif name == "brightness_contrast":
        levels = np.arange(256, dtype=np.float32)
        table = f32_round_saturate(np.float32(params["contrast"]) * levels + np.float32(params["brightness"]))
        out[..., :3] = table[img[..., :3]]
    return out


# --- messages (sections 3, 4 and 6) ------------------------------------------


def split(message, magic):
    """The header (a dict) and the payload of a binary message, or None."""
    if len(message) < 8 or message[:4] != magic:
        return None
    (length,) = struct.unpack_from("<I", message, 4)
    if length > len(message) - 8:
        return None
    try:
        header = json.loads(message[8 : 8 + length].decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return None
    return (header, message[8 + length :]) if isinstance(header, dict) else None


def is_u32(value):
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= U32


def task_ids(header):
    """job_id, tile and attempt, if the header names them usably (section 6)."""
    job, tile, attempt = header.get("job_id"), header.get("tile"), header.get("attempt", 0)
    if not isinstance(job, str) or not 1 <= len(job.encode("utf-8")) <= MAX_ID_BYTES:
        return None
    if not is_u32(tile) or not is_u32(attempt):
        return None
    return job, tile, attempt


def reflect101(i, n):
    if n == 1:
        return np.zeros_like(i)
    period = 2 * (n - 1)
    m = np.mod(i, period)
    return np.where(m < n, m, period - m)


def jpeg_size(data):
    """(width, height) from a JPEG's frame header, read before decoding."""
    at = 2
    if data[:2] != b"\xff\xd8":
        raise TaskError("the payload is not a JPEG")
    while at + 4 <= len(data):
        if data[at] != 0xFF:
            raise TaskError("malformed JPEG markers")
        marker = data[at + 1]
        if marker == 0xFF:
            at += 1
            continue
        (length,) = struct.unpack_from(">H", data, at + 2)
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            if at + 9 > len(data):
                break
            height, width = struct.unpack_from(">HH", data, at + 5)
            return width, height
        at += 2 + length
    raise TaskError("the JPEG has no frame header")


def task_input(header, payload):
    """Checks the task's header and returns its input frame (section 4)."""
    rect = header.get("rect")
    if not isinstance(rect, dict) or not all(is_u32(rect.get(k)) for k in ("x", "y", "width", "height")):
        raise TaskError("rect must have u32 x, y, width and height")
    x, y, width, height = rect["x"], rect["y"], rect["width"], rect["height"]
    if not (1 <= width <= MAX_SIDE and 1 <= height <= MAX_SIDE) or x + width > U32 or y + height > U32:
        raise TaskError(f"a tile is 1..={MAX_SIDE} pixels a side, got {width}x{height}")
    halo = header.get("halo")
    if not is_u32(halo) or halo > MAX_HALO:
        raise TaskError(f"halo must be at most {MAX_HALO}")
    channels = header.get("channels", 3)
    if channels not in (3, 4) or isinstance(channels, bool):
        raise TaskError("channels must be 3 or 4")
    quality = header.get("jpeg_tile_quality")
    if quality is not None and (not isinstance(quality, int) or not 1 <= quality <= 100):
        raise TaskError("jpeg_tile_quality must be 1..=100")
    w, h = width + 2 * halo, height + 2 * halo
    encoding = header.get("encoding", "raw")
    if encoding == "raw":
        if len(payload) != w * h * channels:
            raise TaskError(f"expected {w * h * channels} pixel bytes, got {len(payload)}")
        return np.frombuffer(payload, dtype=np.uint8).reshape(h, w, channels)
    if encoding != "jpeg":
        raise TaskError(f"unknown encoding {encoding!r}")
    source = header.get("source")
    keys = ("x", "y", "width", "height", "image_width", "image_height")
    if channels != 3 or not isinstance(source, dict) or not all(is_u32(source.get(k)) for k in keys):
        raise TaskError("a jpeg task needs channels 3 and a source")
    sx, sy, sw, sh, iw, ih = (source[k] for k in keys)
    if not (1 <= sw <= MAX_SOURCE_SIDE and 1 <= sh <= MAX_SOURCE_SIDE):
        raise TaskError("the source is 1..=3200 pixels a side")
    if sx + sw > iw or sy + sh > ih or x + width > iw or y + height > ih:
        raise TaskError("the source or the tile is outside the image")
    if jpeg_size(payload) != (sw, sh):
        raise TaskError("the JPEG is not the source's size")
    region = cv2.imdecode(np.frombuffer(payload, dtype=np.uint8), cv2.IMREAD_COLOR)
    if region is None or region.shape[:2] != (sh, sw):
        raise TaskError("the JPEG does not decode to the source's size")
    region = cv2.cvtColor(region, cv2.COLOR_BGR2RGB)
    columns = reflect101(np.arange(w, dtype=np.int64) + x - halo, iw) - sx
    rows = reflect101(np.arange(h, dtype=np.int64) + y - halo, ih) - sy
    if columns.min() < 0 or columns.max() >= sw or rows.min() < 0 or rows.max() >= sh:
        raise TaskError("the JPEG region does not cover the tile and its halo")
    return region[rows][:, columns]


def message(magic, header, payload=b""):
    body = json.dumps(header, separators=(",", ":")).encode("utf-8")
    return magic + struct.pack("<I", len(body)) + body + payload


def process(header, payload, worker_id, implemented):
    """A result message for a task, or raises TaskError."""
    ops = header.get("ops")
    if not isinstance(ops, list) or not 1 <= len(ops) <= MAX_STEPS:
        raise TaskError(f"a chain has 1 to {MAX_STEPS} operations")
    steps = [parse_op(op, implemented) for op in ops]
    frame = task_input(header, payload)
    halo = header["halo"]
    if halo != sum(step[2] for step in steps):
        raise TaskError("halo does not match the operations")
    started = time.perf_counter()
    for name, params, _ in steps:
        frame = apply(name, params, np.ascontiguousarray(frame))
    rect = header["rect"]
    output = frame[halo : halo + rect["height"], halo : halo + rect["width"]]
    elapsed_ms = (time.perf_counter() - started) * 1000
    channels = output.shape[2]
    bgr = cv2.cvtColor(output, cv2.COLOR_RGB2BGR if channels == 3 else cv2.COLOR_RGBA2BGRA)
    ok, png = cv2.imencode(".png", bgr, [cv2.IMWRITE_PNG_COMPRESSION, 1])
    if not ok:
        raise TaskError("PNG encoding failed")
    result = {
        "job_id": header["job_id"],
        "tile": header["tile"],
        "rect": rect,
        "worker_id": worker_id,
        "elapsed_ms": elapsed_ms,
        "channels": channels,
        "encoding": "png",
    }
    return message(b"TPR1", result, png.tobytes())


# --- the worker (sections 7 and 9) -------------------------------------------


def resident_bytes():
    """Resident memory now (Linux), else the peak."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class Worker:
    def __init__(self, config):
        self.config = config
        self.stopping = threading.Event()
        self.stopped_jobs = set()
        self.current_tile = None
        self.tiles_done = 0
        self.producer = Producer(
            config.client(**{"message.max.bytes": MAX_MESSAGE_BYTES, "acks": "all", "linger.ms": 0})
        )
        self.tasks = Consumer(
            config.client(
                **{
                    "group.id": config.group,
                    "client.id": config.worker_id,
                    "auto.offset.reset": "earliest",
                    "enable.auto.commit": True,
                    "enable.auto.offset.store": False,
                    "fetch.message.max.bytes": MAX_MESSAGE_BYTES,
                    "fetch.wait.max.ms": 200,
                    "session.timeout.ms": 10000,
                    "queued.max.messages.kbytes": 16384,
                    # Fetch when fewer than 8 tasks wait here, then all there are.
                    "queued.min.messages": 8,
                    "fetch.queue.backoff.ms": 20,
                    "partition.assignment.strategy": "range,roundrobin",
                }
            )
        )
        self.control = Consumer(
            config.client(
                **{
                    "group.id": f"{config.group}-control-{config.worker_id}",
                    "enable.auto.commit": False,
                    "fetch.wait.max.ms": 2000,
                }
            )
        )

    def follow_control(self, until_end=False):
        """Reads control messages; with until_end, only up to the topic's end."""
        end = None
        if until_end:
            try:
                end = self.control.get_watermark_offsets(TopicPartition(self.config.control, 0), timeout=10)[1]
            except Exception:
                end = 0
        read = 0
        while not self.stopping.is_set():
            if end is not None and read >= end:
                return
            msg = self.control.poll(0.1)
            if msg is None or msg.error():
                if end is not None and msg is None and read >= end:
                    return
                continue
            read = msg.offset() + 1
            try:
                control = json.loads(msg.value())
            except ValueError:
                continue
            job = control.get("job_id") if isinstance(control, dict) else None
            if control.get("type") == "job_stopped" and isinstance(job, str) and len(job.encode()) <= MAX_ID_BYTES:
                self.stopped_jobs.add(job)

    def heartbeats(self):
        runtime = f"python {platform.python_version()}, confluent-kafka {kafka_version()[0]}"[:64]
        last_cpu, last_at = time.process_time(), time.monotonic()
        while True:
            cpu, at = time.process_time(), time.monotonic()
            beat = {
                "worker_id": self.config.worker_id,
                "host": socket.gethostname()[:255],
                "pid": os.getpid(),
                "current_tile": self.current_tile,
                "tiles_done": self.tiles_done,
                "sent_at_ms": int(time.time() * 1000),
                "cpu_percent": min(102400.0, max(0.0, 100 * (cpu - last_cpu) / max(at - last_at, 1e-6))),
                "rss_bytes": resident_bytes(),
                "runtime": runtime,
            }
            last_cpu, last_at = cpu, at
            self.producer.produce(self.config.heartbeats, key=self.config.worker_id, value=json.dumps(beat))
            self.producer.poll(0)
            if self.stopping.wait(self.config.heartbeat_secs):
                return

    def send(self, topic, key, value, headers=None):
        """Publishes and waits for the broker's acknowledgement; False if stopping first."""
        while True:
            outcome = []
            self.producer.produce(
                topic, key=key, value=value, headers=headers, on_delivery=lambda err, _msg: outcome.append(err)
            )
            while not outcome:
                self.producer.flush(1)
            if outcome[0] is None:
                return True
            print(f"publishing to {topic} failed ({outcome[0]}); retrying", file=sys.stderr)
            if self.stopping.wait(1):
                return False

    def reply(self, msg):
        """What to send for a task: (topic, key, value, headers), or None to skip it."""
        value = msg.value() or b""
        parts = split(value, b"TPT1")
        ids = task_ids(parts[0]) if parts else None
        if ids is None:
            return self.config.dead_letters, msg.key(), value, [("error", b"the task's header cannot be read")]
        job, tile, attempt = ids
        key = f"{job}/{tile}"
        if job in self.stopped_jobs:
            return None
        self.current_tile = key
        unsupported = None
        try:
            result = process(parts[0], parts[1], self.config.worker_id, self.config.ops)
            self.tiles_done += 1
            return self.config.results, key, result, None
        except Unsupported as e:
            error, unsupported = str(e), e.op
        except TaskError as e:
            error = str(e)
        except Exception as e:  # a bug here must not stop the worker: report it
            error = f"the worker failed: {e!r}"
        finally:
            self.current_tile = None
        failure = {"job_id": job, "tile": tile, "worker_id": self.config.worker_id, "error": error}
        if unsupported:
            failure["unsupported"] = unsupported
        if attempt:
            failure["attempt"] = attempt
        return self.config.results, key, message(b"TPF1", failure), None

    def run(self):
        self.control.assign([TopicPartition(self.config.control, 0, OFFSET_BEGINNING)])
        self.follow_control(until_end=True)
        threading.Thread(target=self.follow_control, daemon=True).start()
        beats = threading.Thread(target=self.heartbeats, daemon=True)
        beats.start()
        self.tasks.subscribe([self.config.tasks])
        print(f"worker {self.config.worker_id} started on {self.config.tasks}", file=sys.stderr)
        while not self.stopping.is_set():
            msg = self.tasks.poll(0.1)
            if msg is None:
                continue
            if msg.error():
                if msg.error().code() != KafkaError._PARTITION_EOF:
                    print(f"tasks consumer: {msg.error()}", file=sys.stderr)
                continue
            outgoing = self.reply(msg)
            if outgoing is not None and not self.send(*outgoing):
                break  # not acknowledged: the task stays uncommitted, for another worker
            self.tasks.store_offsets(message=msg)
        self.stopping.set()
        beats.join()
        self.producer.flush(5)
        self.tasks.close()  # commits the stored offsets and leaves the group
        self.control.close()


def main():
    worker = Worker(Config())
    stop = lambda *_: worker.stopping.set()  # noqa: E731
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    worker.run()


if __name__ == "__main__":
    main()
