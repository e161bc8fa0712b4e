#!/usr/bin/env bash
# Writes the decoder targets' seeds from the contract's examples (schemas/examples/, demo/ too):
# each case becomes `ROUTING_KEY\nMESSAGE` in corpus/event/ or corpus/command/, named
# seed-<dir>-<file>. Run it after adding an example; commit what it writes.
set -euo pipefail
cd "$(dirname "$0")"
mkdir -p corpus/event corpus/command
python3 - <<'PY'
import json, pathlib
for path in sorted(pathlib.Path("../schemas/examples").glob("*/*.json")):
    case = json.loads(path.read_text(encoding="utf-8"))
    if "message" not in case:  # demo/ holds bare messages
        kind = "event" if "event_type" in case else "command"
        case = {"kind": kind, "routing_key": case[kind + "_type"], "message": case}
    # Python keeps 1.0 and integers beyond 64 bits as written; the cases depend on that.
    body = json.dumps(case["message"], ensure_ascii=False, separators=(",", ":"))
    out = pathlib.Path("corpus", case["kind"], f"seed-{path.parent.name}-{path.stem}")
    out.write_bytes(case["routing_key"].encode() + b"\n" + body.encode())
PY
echo "seeds: $(ls corpus/event | grep -c '^seed-') event, $(ls corpus/command | grep -c '^seed-') command"
