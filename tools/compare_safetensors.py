#!/usr/bin/env python3
"""Compare two safetensors files tensor by tensor (bytes, dtype, shape) and their metadata.

    python3 tools/compare_safetensors.py OLD NEW

Used to check that a decoder-only training changed only decoder.* tensors (docs/MODELS.md);
needs only the standard library."""
import json, struct, sys
def read(p):
    raw = open(p, 'rb').read()
    n = struct.unpack('<Q', raw[:8])[0]
    h = json.loads(raw[8:8+n]); body = raw[8+n:]
    meta = h.pop('__metadata__', {})
    return meta, {k: body[v['data_offsets'][0]:v['data_offsets'][1]] + json.dumps([v['dtype'], v['shape']]).encode() for k, v in h.items()}
ma, a = read(sys.argv[1]); mb, b = read(sys.argv[2])
diff = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
print('metadata identical:', ma == mb)
print('tensors:', len(a), 'vs', len(b), '; differing:', len(diff))
print('differing non-decoder:', [k for k in diff if not k.startswith('decoder.')])
print('all differing are decoder.*:', all(k.startswith('decoder.') for k in diff))
