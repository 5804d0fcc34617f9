"""A camera on loopback for the tests: an RTSP server (GStreamer's gst-rtsp-server) that serves a video file in a
loop as H.264, live, at the file's frame rate.

Runs under the system Python (`/usr/bin/python3`, where Debian's python3-gi and gir1.2-gst-rtsp-server-1.0 are
installed), as its own process, so that a test can kill it (SIGKILL: a camera that drops), stop it (SIGSTOP: a
camera that freezes) and start it again:

    /usr/bin/python3 tests/runtime/stream/rtsp_server.py --port 8554 --video clip.mp4   # rtsp://127.0.0.1:8554/cam

The file is decoded once into memory; the stream's frames are pushed from it in a loop with timestamps at the
file's rate (the server's sinks pace them). Prints `ready` once it listens; SIGTERM ends it.
"""

from __future__ import annotations

import argparse
import signal
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402

ENCODE = (
    "( appsrc name=src is-live=true format=time ! videoconvert ! "
    "x264enc tune=zerolatency speed-preset=ultrafast key-int-max={key} ! "
    "rtph264pay name=pay0 pt=96 config-interval=1 )"
)


def decode(path: str) -> tuple[Gst.Caps, list[bytes], int, int]:
    """The raw I420 frames of `path`, their caps and the frame rate (numerator, denominator)."""
    pipeline = Gst.parse_launch(
        f'filesrc location="{path}" ! decodebin ! videoconvert ! video/x-raw,format=I420 ! '
        "appsink name=sink sync=false emit-signals=false"
    )
    sink = pipeline.get_by_name("sink")
    pipeline.set_state(Gst.State.PLAYING)
    frames: list[bytes] = []
    caps = None
    while (sample := sink.emit("pull-sample")) is not None:
        caps = sample.get_caps()
        buffer = sample.get_buffer()
        frames.append(buffer.extract_dup(0, buffer.get_size()))
    pipeline.set_state(Gst.State.NULL)
    if not frames or caps is None:
        sys.exit(f"error: no frames decoded ({path})")
    ok, num, den = caps.get_structure(0).get_fraction("framerate")
    return caps, frames, (num if ok and num > 0 else 25), (den if ok and den > 0 else 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--video", required=True, help="A video file GStreamer decodes (served in a loop).")
    parser.add_argument("--mount", default="/cam")
    args = parser.parse_args()
    Gst.init(None)
    caps, frames, num, den = decode(args.video)
    duration = Gst.util_uint64_scale_int(Gst.SECOND, den, num)

    def configure(factory: GstRtspServer.RTSPMediaFactory, media: GstRtspServer.RTSPMedia) -> None:
        src = media.get_element().get_child_by_name("src")
        src.set_property("caps", caps)
        count = [0]

        def need_data(appsrc: Gst.Element, length: int) -> None:
            buffer = Gst.Buffer.new_wrapped(frames[count[0] % len(frames)])
            buffer.pts = count[0] * duration
            buffer.duration = duration
            count[0] += 1
            appsrc.emit("push-buffer", buffer)

        src.connect("need-data", need_data)

    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(ENCODE.format(key=max(1, num // den)))  # a key frame a second: a client joins within 1 s
    factory.set_shared(True)
    factory.connect("media-configure", configure)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(args.port))
    server.get_mount_points().add_factory(args.mount, factory)
    if not server.attach(None):
        sys.exit(f"error: cannot listen on 127.0.0.1:{args.port}")
    loop = GLib.MainLoop()
    GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, signal.SIGTERM, loop.quit)
    print("ready", flush=True)
    loop.run()


if __name__ == "__main__":
    main()
