"""Camera sources and the frame grabber, on real files: watch folders the tests fill,
video files the tests write with cv2.VideoWriter, and an RTSP URL nobody answers."""

from __future__ import annotations

import os
import queue
import shutil
import socket
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from gatekeeper.vision.camera.folder import WatchFolderSource
from gatekeeper.vision.camera.frames import CameraHealth, FrameSource, SourceError
from gatekeeper.vision.camera.grabber import FrameGrabber
from gatekeeper.vision.camera.sources import StreamSource, VideoFileSource, open_source
from gatekeeper.vision.camera.spec import parse_spec, redact
from gatekeeper.config import LaneConfig

WAIT = 10.0  # generous upper bound for anything that should happen "soon"


# --------------------------------------------------------------------------- helpers


def scene(n: int, size: tuple[int, int] = (120, 160)) -> np.ndarray:
    """A distinct BGR picture per n: a level the tests can recognise and a drawn number."""
    h, w = size
    img = np.full((h, w, 3), (10 * n) % 250, np.uint8)
    cv2.putText(img, str(n), (10, h - 20), cv2.FONT_HERSHEY_SIMPLEX, 2.0, (255, 255, 255), 3)
    return img


def encode(img: np.ndarray, ext: str) -> bytes:
    ok, data = cv2.imencode(ext, img)
    assert ok
    return data.tobytes()


def drop(folder: Path, name: str, img: np.ndarray) -> Path:
    """An FTP-style upload: temp dotfile, then rename into place."""
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{name}.part"
    tmp.write_bytes(encode(img, Path(name).suffix))
    final = folder / name
    os.replace(tmp, final)
    return final


def write_video(path: Path, frames: int, fps: float = 100.0, size: tuple[int, int] = (64, 48)) -> None:
    """MJPG in AVI: frame i is a flat grey of level 8*i so the tests can tell frames apart."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, size)
    assert writer.isOpened()
    for i in range(frames):
        writer.write(np.full((size[1], size[0], 3), 8 * i, np.uint8))
    writer.release()


def level(frame_image: np.ndarray) -> int:
    """The frame index of a write_video frame."""
    return int(round(float(frame_image.mean()) / 8))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Watched:
    """A FrameSource wrapper that reports opens, open failures and read failures as they happen."""

    def __init__(self, inner: FrameSource) -> None:
        self.inner = inner
        self.cond = threading.Condition()
        self.opens = 0
        self.open_failures: list[float] = []  # monotonic times of failed opens
        self.read_failures = 0
        self.frames_read = 0
        self.lossless = getattr(inner, "lossless", False)

    @property
    def on_error(self):  # pass the grabber's problem counter through to the real source
        return getattr(self.inner, "on_error", None)

    @on_error.setter
    def on_error(self, callback) -> None:
        if hasattr(self.inner, "on_error"):
            self.inner.on_error = callback

    def open(self) -> None:
        try:
            self.inner.open()
        except Exception:
            with self.cond:
                self.open_failures.append(time.monotonic())
                self.cond.notify_all()
            raise
        with self.cond:
            self.opens += 1
            self.cond.notify_all()

    def read(self, timeout: float):
        try:
            got = self.inner.read(timeout)
        except Exception:
            with self.cond:
                self.read_failures += 1
                self.cond.notify_all()
            raise
        if got is not None:
            with self.cond:
                self.frames_read += 1
                self.cond.notify_all()
        return got

    def close(self) -> None:
        self.inner.close()

    def wait(self, predicate, timeout: float = WAIT) -> None:
        with self.cond:
            assert self.cond.wait_for(predicate, timeout), "condition not reached in time"


class QueueSource:
    """A live-camera stand-in fed by the test: each queued image is one camera frame."""

    def __init__(self) -> None:
        self.frames: queue.Queue[np.ndarray | Exception] = queue.Queue()

    def open(self) -> None:
        pass

    def read(self, timeout: float):
        try:
            item = self.frames.get(timeout=timeout)
        except queue.Empty:
            return None
        try:
            if isinstance(item, Exception):
                raise item
            return item, None
        finally:
            self.frames.task_done()

    def close(self) -> None:
        pass


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def take_all(grabber: FrameGrabber, count: int, after: int = -1) -> list:
    frames = []
    for _ in range(count):
        frame = grabber.next_frame(after, timeout=WAIT)
        assert frame is not None, f"only {len(frames)} of {count} frames arrived"
        frames.append(frame)
        after = frame.seq
    return frames


# --------------------------------------------------------------------------- spec parsing


@pytest.mark.parametrize(
    ("spec", "kind", "target"),
    [
        ("0", "device", "0"),
        ("2", "device", "2"),
        ("/dev/video0", "device", "/dev/video0"),
        ("rtsp://cam.local:554/stream1", "stream", "rtsp://cam.local:554/stream1"),
        ("http://10.0.0.5/mjpg/video.mjpg", "stream", "http://10.0.0.5/mjpg/video.mjpg"),
        ("https://cam.example/live", "stream", "https://cam.example/live"),
        ("file:/videos/demo.mp4", "file", "/videos/demo.mp4"),
        ("file:relative/clip.bin", "file", "relative/clip.bin"),
        ("/videos/demo.AVI", "file", "/videos/demo.AVI"),
        ("clips/entry.mkv", "file", "clips/entry.mkv"),
        ("dir:/srv/ftp/entry-1", "dir", "/srv/ftp/entry-1"),
    ],
)
def test_parse_spec(spec: str, kind: str, target: str) -> None:
    parsed = parse_spec(spec)
    assert (parsed.kind, parsed.target) == (kind, target)


@pytest.mark.parametrize("spec", ["", "  ", "camera", "/tmp/photo.jpg", "dir:", "file:", "ftp://cam/x"])
def test_parse_spec_rejects_unknown_forms(spec: str) -> None:
    with pytest.raises(ValueError, match="camera source"):
        parse_spec(spec)


def test_open_source_picks_the_class(tmp_path: Path) -> None:
    assert isinstance(open_source(f"dir:{tmp_path}"), WatchFolderSource)
    video = open_source(f"file:{tmp_path / 'a.avi'}", loop=True)
    assert isinstance(video, VideoFileSource) and video.loop
    stream = open_source("rtsp://admin:hunter2@10.0.0.9/h264")
    assert isinstance(stream, StreamSource)
    assert "hunter2" not in stream.spec


def test_redact_masks_url_passwords_only() -> None:
    assert redact("rtsp://admin:hunter2@10.0.0.9:554/h264") == "rtsp://admin:***@10.0.0.9:554/h264"
    assert redact("rtsp://10.0.0.9/h264") == "rtsp://10.0.0.9/h264"
    assert redact("dir:/srv/ftp") == "dir:/srv/ftp"


# --------------------------------------------------------------------------- watch folder


def test_watch_folder_delivers_png_and_jpeg_in_arrival_order(tmp_path: Path) -> None:
    folder = tmp_path / "cam"  # does not exist yet: the source creates it
    with FrameGrabber(source=f"dir:{folder}", lane="entry-1") as grabber:
        frames = []
        for i, name in enumerate(["a0.png", "a1.jpg", "a2.jpeg", "a3.png"]):
            drop(folder, name, scene(i))
            frames += take_all(grabber, 1, frames[-1].seq if frames else -1)
    assert [f.path.name for f in frames] == ["a0.png", "a1.jpg", "a2.jpeg", "a3.png"]
    assert [f.seq for f in frames] == [0, 1, 2, 3]
    assert all(f.lane == "entry-1" and f.source == f"dir:{folder}" for f in frames)
    assert all(f.at.tzinfo is not None and f.at.utcoffset().total_seconds() == 0 for f in frames)
    # PNG is lossless: the very pixels; the frame's file is in processed/, the folder is empty again
    assert np.array_equal(frames[0].image, scene(0))
    assert np.array_equal(frames[3].image, scene(3))
    assert np.abs(frames[1].image.astype(int) - scene(1)).mean() < 6
    assert all(f.path.parent == folder / "processed" and f.path.is_file() for f in frames)
    assert [p.name for p in folder.iterdir() if p.is_file()] == []


def test_watch_folder_every_file_reaches_a_slow_consumer(tmp_path: Path) -> None:
    """A burst of snapshots (one vehicle, several pictures) is not thinned out to the newest."""
    folder = tmp_path / "cam"
    for i in range(6):
        drop(folder, f"burst{i}.png", scene(i))
    with FrameGrabber(source=f"dir:{folder}", lane="l") as grabber:
        frames = take_all(grabber, 6)
        assert grabber.next_frame(frames[-1].seq, timeout=0.3) is None  # nothing invented
    assert [f.path.name for f in frames] == [f"burst{i}.png" for i in range(6)]
    assert [int(f.image[0, 0, 0]) for f in frames] == [10 * i for i in range(6)]


def test_half_written_file_waits_until_complete(tmp_path: Path) -> None:
    folder = tmp_path / "cam"
    folder.mkdir()
    full = encode(scene(7), ".png")
    half = folder / "slow.png"
    half.write_bytes(full[: len(full) // 2])  # an upload in progress under its final name
    with FrameGrabber(source=f"dir:{folder}", lane="l") as grabber:
        drop(folder, "quick.png", scene(8))
        first = grabber.next_frame(timeout=WAIT)
        assert first is not None and first.path.name == "quick.png"
        assert half.exists(), "the partial file must stay where it is"
        with half.open("ab") as f:  # the upload finishes
            f.write(full[len(full) // 2:])
        second = grabber.next_frame(first.seq, timeout=WAIT)
    assert second is not None and second.path.name == "slow.png"
    assert np.array_equal(second.image, scene(7))
    assert not (folder / "rejected").exists() or not any((folder / "rejected").iterdir())


def test_corrupt_file_is_rejected_and_the_next_good_one_arrives(tmp_path: Path) -> None:
    folder = tmp_path / "cam"
    folder.mkdir()
    # JPEG start and end markers around garbage: looks complete, does not decode
    (folder / "bad.jpg").write_bytes(b"\xff\xd8" + os.urandom(2000) + b"\xff\xd9")
    drop(folder, "good.png", scene(3))
    source = WatchFolderSource(folder=folder, reject_after_s=0.3)
    grabber = FrameGrabber(source=source, lane="l")
    rejected = threading.Event()
    count_it = source.on_error  # the grabber's error counter, installed by the grabber
    source.on_error = lambda message: (count_it(message), rejected.set())
    with grabber:
        frame = grabber.next_frame(timeout=WAIT)  # the bad file does not hold up the good one
        assert frame is not None and frame.path.name == "good.png"
        assert rejected.wait(WAIT)
        health = grabber.health()
        drop(folder, "next.png", scene(4))
        following = grabber.next_frame(frame.seq, timeout=WAIT)
    assert following is not None and following.path.name == "next.png"
    assert (folder / "rejected" / "bad.jpg").is_file()
    assert not (folder / "bad.jpg").exists()
    assert health.errors == 1 and "bad.jpg" in (health.last_error or "")
    assert health.connected and health.frames == 1


def test_unterminated_garbage_is_rejected_after_the_grace_time(tmp_path: Path) -> None:
    folder = tmp_path / "cam"
    source = WatchFolderSource(folder=folder, reject_after_s=0.3)
    rejected = threading.Event()
    source.on_error = lambda message: rejected.set()
    source.open()
    (folder / "noise.jpg").write_bytes(b"this is not a picture at all")
    assert source.read(0.05) is None  # not complete, not yet old enough to give up on
    deadline = time.monotonic() + WAIT
    while not rejected.is_set() and time.monotonic() < deadline:
        assert source.read(0.05) is None
    assert rejected.is_set()
    assert (folder / "rejected" / "noise.jpg").is_file()
    assert source.rejected == 1
    rejected.clear()
    (folder / "empty.png").touch()  # an upload that never got going
    deadline = time.monotonic() + WAIT
    while not rejected.is_set() and time.monotonic() < deadline:
        assert source.read(0.05) is None
    assert (folder / "rejected" / "empty.png").is_file() and source.rejected == 2
    drop(folder, "after.png", scene(1))
    got = source.read(WAIT)
    assert got is not None and got[1] == folder / "processed" / "after.png"


def test_uploads_in_progress_and_other_files_are_left_alone(tmp_path: Path, caplog) -> None:
    folder = tmp_path / "cam"
    source = WatchFolderSource(folder=folder)
    source.open()
    png = encode(scene(1), ".png")
    (folder / ".hidden.png").write_bytes(png)
    (folder / "upload.png.part").write_bytes(png)
    (folder / "upload.jpg.tmp").write_bytes(encode(scene(2), ".jpg"))
    (folder / "meta.xml").write_text("<event/>")
    with caplog.at_level("WARNING", logger="gatekeeper.vision.camera.folder"):
        assert source.read(0.4) is None
        assert source.read(0.1) is None
    assert sorted(p.name for p in folder.iterdir() if p.is_file()) == [
        ".hidden.png", "meta.xml", "upload.jpg.tmp", "upload.png.part"]
    assert sum("meta.xml" in r.getMessage() for r in caplog.records) == 1  # said once, not every poll
    os.replace(folder / "upload.png.part", folder / "upload.png")  # the uploader's final rename
    got = source.read(WAIT)
    assert got is not None and got[1].name == "upload.png"


def test_restart_does_not_reread_and_processed_stays_bounded(tmp_path: Path) -> None:
    folder = tmp_path / "cam"
    source = WatchFolderSource(folder=folder, keep_processed=3)
    source.open()
    names = []
    for i in range(5):
        drop(folder, f"s{i}.png", scene(i))
        got = source.read(WAIT)
        assert got is not None
        names.append(got[1].name)
    source.close()
    assert names == [f"s{i}.png" for i in range(5)]
    kept = sorted(p.name for p in (folder / "processed").iterdir())
    assert kept == ["s2.png", "s3.png", "s4.png"]

    again = WatchFolderSource(folder=folder, keep_processed=3)  # a restart
    again.open()
    assert again.read(0.3) is None
    drop(folder, "s2.png", scene(9))  # the camera re-uses a name: both copies are kept
    got = again.read(WAIT)
    assert got is not None and got[1] == folder / "processed" / "s2.1.png"
    assert np.array_equal(got[0], scene(9))


def test_watch_folder_deleted_and_recreated(tmp_path: Path) -> None:
    folder = tmp_path / "cam"
    source = Watched(WatchFolderSource(folder=folder))
    with FrameGrabber(source=source, lane="l", backoff_min_s=0.05, backoff_max_s=0.2) as grabber:
        drop(folder, "before.png", scene(1))
        first = grabber.next_frame(timeout=WAIT)
        assert first is not None
        shutil.rmtree(folder)
        folder.write_text("a file where the folder was")  # blocks re-creation for now
        source.wait(lambda: source.read_failures >= 1)
        # the grabber counts a failure before it tries again: after the third attempt, two are counted
        source.wait(lambda: len(source.open_failures) >= 3)
        down = grabber.health()
        assert not down.connected and down.errors >= 3 and down.retry_in_s is not None
        assert "cam" in (down.last_error or "")
        folder.unlink()  # the obstacle is gone: the grabber re-creates the folder itself
        source.wait(lambda: source.opens >= 2)
        assert folder.is_dir()
        drop(folder, "after.png", scene(2))
        second = grabber.next_frame(first.seq, timeout=WAIT)
        up = grabber.health()
    assert second is not None and second.path.name == "after.png"
    assert up.connected and up.reconnects == 1 and up.frames == 2 and up.retry_in_s is None


# --------------------------------------------------------------------------- video files


def test_video_file_plays_to_the_end_once(tmp_path: Path) -> None:
    path = tmp_path / "clip.avi"
    write_video(path, frames=20)
    with FrameGrabber(source=str(path), lane="l") as grabber:
        seen = []
        after = -1
        while not seen or level(seen[-1].image) < 19:
            frame = grabber.next_frame(after, timeout=WAIT)
            assert frame is not None, f"video stopped early after levels {[level(f.image) for f in seen]}"
            seen.append(frame)
            after = frame.seq
        assert grabber.next_frame(after, timeout=0.3) is None  # ended: no loop
        health = grabber.health()
    levels = [level(f.image) for f in seen]
    assert levels == sorted(levels) and levels[-1] == 19
    assert seen[-1].seq == 19 and health.frames == 20 and health.errors == 0
    assert seen[0].image.shape == (48, 64, 3) and seen[0].path is None
    assert seen[0].source == f"{path}"


def test_video_file_loops(tmp_path: Path) -> None:
    path = tmp_path / "clip.avi"
    write_video(path, frames=10)
    with FrameGrabber(source=f"file:{path}", lane="l", loop=True) as grabber:
        after, levels = -1, []
        while after < 35:  # three and a half passes of a ten-frame clip
            frame = grabber.next_frame(after, timeout=WAIT)
            assert frame is not None, "looping video stopped"
            levels.append(level(frame.image))
            after = frame.seq
        health = grabber.health()
    wraps = sum(1 for a, b in zip(levels, levels[1:]) if b < a)
    assert wraps >= 3
    assert health.frames >= 36 and health.errors == 0 and health.reconnects == 0


def test_video_file_plays_at_its_own_rate(tmp_path: Path) -> None:
    path = tmp_path / "clip.avi"
    write_video(path, frames=20, fps=20.0)
    source = VideoFileSource(path=path)
    source.open()
    try:
        start = time.monotonic()
        for _ in range(11):
            assert source.read(1.0) is not None
        elapsed = time.monotonic() - start
    finally:
        source.close()
    assert elapsed >= 0.45  # ten intervals of 50 ms: not flat out


def test_video_file_that_disappears_and_comes_back(tmp_path: Path) -> None:
    path = tmp_path / "clip.avi"
    away = tmp_path / "away.avi"
    write_video(path, frames=10)
    source = Watched(VideoFileSource(path=path, loop=True))
    with FrameGrabber(source=source, lane="l", backoff_min_s=0.05, backoff_max_s=0.2) as grabber:
        first = grabber.next_frame(timeout=WAIT)
        assert first is not None
        os.replace(path, away)
        source.wait(lambda: source.read_failures >= 1)  # the end of a pass finds the file gone
        source.wait(lambda: len(source.open_failures) >= 1)
        assert not grabber.health().connected
        os.replace(away, path)
        source.wait(lambda: source.opens >= 2)
        latest = grabber.latest()
        assert latest is not None
        later = grabber.next_frame(latest.seq, timeout=WAIT)
        health = grabber.health()
    assert later is not None
    assert health.connected and health.reconnects == 1 and health.errors >= 2
    assert "not found" in (health.last_error or "") or "gone" in (health.last_error or "")


def test_missing_video_file_is_a_source_error(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="not found"):
        VideoFileSource(path=tmp_path / "none.avi").open()
    (tmp_path / "junk.avi").write_bytes(b"not a video")
    junk = VideoFileSource(path=tmp_path / "junk.avi")
    with pytest.raises(SourceError):
        junk.open()
        junk.read(0.1)


# --------------------------------------------------------------------------- RTSP


def test_unreachable_rtsp_backs_off_and_reports_disconnected() -> None:
    url = f"rtsp://admin:hunter2@127.0.0.1:{free_port()}/x"
    source = Watched(StreamSource(url=url, open_timeout_s=2, read_timeout_s=2))
    grabber = FrameGrabber(source=source, lane="gate", backoff_min_s=0.05, backoff_max_s=0.2)
    grabber.start()
    try:
        source.wait(lambda: len(source.open_failures) >= 6)  # the sixth try: five failures counted
        health = grabber.health()
        assert grabber.running
    finally:
        grabber.close()
    assert not health.connected and health.frames == 0 and health.reconnects == 0
    assert health.errors >= 5 and health.fps == 0.0 and health.last_frame_age_s is None
    assert "cannot open" in (health.last_error or "") and "hunter2" not in (health.last_error or "")
    assert health.retry_in_s is not None and health.retry_in_s <= 0.2
    gaps = [b - a for a, b in zip(source.open_failures, source.open_failures[1:])]
    for i, gap in enumerate(gaps[:4]):
        assert gap >= 0.9 * min(0.05 * 2**i, 0.2), f"retry {i + 1} came after {gap:.3f} s"
    assert not grabber.running


def test_rtsp_spec_through_the_grabber_is_redacted() -> None:
    grabber = FrameGrabber(source="rtsp://u:pw123@127.0.0.1:9/x", lane="l")
    assert isinstance(grabber.source, StreamSource)
    assert grabber.spec == "rtsp://u:***@127.0.0.1:9/x"
    grabber.close()  # never started: closes cleanly


# --------------------------------------------------------------------------- grabber behaviour


def test_live_source_keeps_only_the_newest_frame() -> None:
    source = QueueSource()
    with FrameGrabber(source=source, lane="l") as grabber:
        for i in range(5):
            source.frames.put(scene(i))
        source.frames.join()  # the grabber has read all five
        frame = grabber.next_frame(timeout=WAIT)
        assert frame is not None and frame.seq == 4 and np.array_equal(frame.image, scene(4))
        assert grabber.latest() is frame
        assert grabber.next_frame(frame.seq, timeout=0.2) is None


def test_health_figures_with_an_injected_clock() -> None:
    clock = FakeClock()
    source = QueueSource()
    grabber = FrameGrabber(source=source, lane="l", clock=clock, fps_window_s=5.0)
    assert grabber.health() == CameraHealth(False, 0.0, None, 0, 0, 0, None)
    with grabber:
        after = -1
        for _ in range(11):  # 10 fps for one second
            source.frames.put(scene(0))
            frame = grabber.next_frame(after, timeout=WAIT)
            assert frame is not None
            after = frame.seq
            clock.t += 0.1
        health = grabber.health()
        assert health.connected and health.frames == 11 and health.errors == 0
        assert health.fps == pytest.approx(10 / 1.1, rel=0.01)
        assert health.last_frame_age_s == pytest.approx(0.1)
        clock.t += 10  # the camera goes quiet: fps falls to zero, age grows
        quiet = grabber.health()
        assert quiet.fps == 0.0 and quiet.last_frame_age_s == pytest.approx(10.1)


def test_grabber_survives_any_exception_from_a_source() -> None:
    source = QueueSource()
    with FrameGrabber(source=source, lane="l", backoff_min_s=0.01, backoff_max_s=0.05) as grabber:
        source.frames.put(RuntimeError("driver hiccup"))
        source.frames.put(scene(1))
        frame = grabber.next_frame(timeout=WAIT)
        health = grabber.health()
    assert frame is not None and np.array_equal(frame.image, scene(1))
    assert health.errors == 1 and health.reconnects == 1
    assert health.last_error == "RuntimeError: driver hiccup"


def test_close_joins_promptly_and_wakes_waiting_consumers(tmp_path: Path) -> None:
    grabber = FrameGrabber(source=f"dir:{tmp_path / 'cam'}", lane="l")
    grabber.start()
    got: list[object] = []
    waiter = threading.Thread(target=lambda: got.append(grabber.next_frame(timeout=None)))
    waiter.start()
    assert grabber.running
    start = time.monotonic()
    grabber.close()
    took = time.monotonic() - start
    waiter.join(WAIT)
    assert not grabber.running and not waiter.is_alive()
    assert got == [None]
    assert took < 1.0, f"close() took {took:.2f} s"
    assert not grabber.health().connected


def test_close_leaves_unread_snapshots_on_disk(tmp_path: Path) -> None:
    """The grabber holds at most one untaken snapshot; the rest wait on disk for the next start."""
    folder = tmp_path / "cam"
    for name in ("one.png", "two.png", "three.png"):
        drop(folder, name, scene(1))
    grabber = FrameGrabber(source=f"dir:{folder}", lane="l")
    grabber.start()
    first = grabber.next_frame(timeout=WAIT)
    grabber.close()
    assert first is not None and first.path.name == "one.png"
    assert not grabber.running
    assert (folder / "three.png").is_file()


def test_from_config(tmp_path: Path) -> None:
    lane = LaneConfig(id="exit-2", direction="exit", camera=f"file:{tmp_path / 'x.mp4'}", camera_loop=True,
                      relay_pin=22)
    grabber = FrameGrabber.from_config(lane)
    assert grabber.lane == "exit-2"
    assert isinstance(grabber.source, VideoFileSource) and grabber.source.loop
    assert not grabber.lossless
    folder_lane = lane.model_copy(update={"camera": f"dir:{tmp_path}"})
    assert FrameGrabber.from_config(folder_lane).lossless


def test_asking_past_a_peeked_snapshot_releases_the_next_one(tmp_path: Path) -> None:
    """A consumer that saw a snapshot only through latest() and asks for newer ones does not stall the folder."""
    folder = tmp_path / "cam"
    source = Watched(WatchFolderSource(folder=folder))
    drop(folder, "p0.png", scene(0))
    with FrameGrabber(source=source, lane="l") as grabber:
        source.wait(lambda: source.frames_read >= 1)
        peeked = grabber.latest()  # never handed out by next_frame
        assert peeked is not None and peeked.path.name == "p0.png"
        drop(folder, "p1.png", scene(1))
        after = grabber.next_frame(peeked.seq, timeout=WAIT)
    assert after is not None and after.path.name == "p1.png"
