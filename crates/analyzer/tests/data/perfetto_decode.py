"""Decodes a Perfetto trace with Perfetto's own generated protobuf classes (the `perfetto` PyPI
package, not the analyzer's writer) and prints what a timeline viewer would build from it, as
JSON: tracks, slice nesting paths, instants, and every structural error found.

Usage: python3 perfetto_decode.py TRACE
Exit status 77 when the perfetto or protobuf package is missing (the caller skips).
"""
import json
import sys
from collections import Counter, defaultdict

try:
    from perfetto.protos.perfetto.trace.perfetto_trace_pb2 import Trace, TrackEvent
except ImportError as e:  # the caller reports SKIPPED with this line
    print(f"missing python package: {e}", file=sys.stderr)
    sys.exit(77)

trace = Trace.FromString(open(sys.argv[1], "rb").read())
tracks = {}
errors = []
open_slices = defaultdict(list)  # track uuid -> names of open slices
last_ts = {}  # sequence id -> last timestamp
paths = Counter()
instants = []
slices = 0
for p in trace.packet:
    if p.HasField("track_descriptor"):
        d = p.track_descriptor
        tracks[d.uuid] = {
            "parent": d.parent_uuid if d.HasField("parent_uuid") else None,
            "pid": d.thread.pid if d.HasField("thread") else (d.process.pid if d.HasField("process") else None),
            "tid": d.thread.tid if d.HasField("thread") else None,
            "name": d.thread.thread_name if d.HasField("thread") else (d.process.process_name if d.HasField("process") else d.name),
        }
        continue
    if not p.HasField("track_event"):
        errors.append("a packet with neither a track descriptor nor a track event")
        continue
    seq = p.trusted_packet_sequence_id
    if p.timestamp < last_ts.get(seq, 0):
        errors.append(f"sequence {seq}: time goes back at {p.timestamp}")
    last_ts[seq] = p.timestamp
    e = p.track_event
    if e.track_uuid not in tracks:
        errors.append(f"event on undeclared track {e.track_uuid}")
    stack = open_slices[e.track_uuid]
    if e.type == TrackEvent.TYPE_SLICE_BEGIN:
        stack.append(e.name)
        slices += 1
        paths[" > ".join(stack)] += 1
    elif e.type == TrackEvent.TYPE_SLICE_END:
        if not stack:
            errors.append(f"track {e.track_uuid}: an end without a begin at {p.timestamp}")
        else:
            stack.pop()
    elif e.type == TrackEvent.TYPE_INSTANT:
        args = {a.name: (a.string_value if a.HasField("string_value") else a.uint_value) for a in e.debug_annotations}
        instants.append({
            "name": e.name,
            "categories": list(e.categories),
            "tid": tracks.get(e.track_uuid, {}).get("tid"),
            "inside": " > ".join(stack),
            "args": args,
        })
    else:
        errors.append(f"unexpected event type {e.type}")
for uuid, stack in open_slices.items():
    if stack:
        errors.append(f"track {uuid}: {len(stack)} slices never end")
print(json.dumps({
    "tracks": list(tracks.values()),
    "slices": slices,
    "paths": dict(paths),
    "instants": instants,
    "errors": errors,
}))
