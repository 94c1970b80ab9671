#!/usr/bin/env python3
"""Give stored eval reports and study parts the planning CRC of their model (docs/STUDY.md).

    python3 tools/stamp_planning_crc.py FILE_CRC PLANNING_CRC REPORT.json...

Every `"model_crc32": "FILE_CRC"` line without a `model_planning_crc32` next to it gets
`"model_planning_crc32": "PLANNING_CRC"` inserted after it, with the same indentation; nothing
else in the file changes (a text edit, so numbers keep their exact spelling). Take both CRCs
from `qwm model info MODEL` of the file the reports were made with. Used once, on 2026-12-02,
when the shipped decoders were retrained: the reports stamped with the old files' CRCs then
resume against the new files, whose planning CRC is the same. Standard library only."""
import re, sys

file_crc, planning_crc, paths = sys.argv[1], sys.argv[2], sys.argv[3:]
pat = re.compile(r'^(\s*)"model_crc32": "%s",\n' % re.escape(file_crc))
for p in paths:
    lines = open(p).read().splitlines(keepends=True)
    out, n = [], 0
    for i, line in enumerate(lines):
        out.append(line)
        m = pat.match(line)
        if m and not (i + 1 < len(lines) and '"model_planning_crc32"' in lines[i + 1]):
            out.append('%s"model_planning_crc32": "%s",\n' % (m.group(1), planning_crc))
            n += 1
    if n:
        open(p, 'w').write(''.join(out))
    print('%s: %d stamped' % (p, n))
