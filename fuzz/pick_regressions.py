#!/usr/bin/env python3
# Usage: pick_regressions.py CORPUS_DIR OUT_DIR COUNT MAX_BYTES json|any
"""Greedy pick of small, diverse corpus entries: each pick covers the most dictionary words not yet covered."""
import json, os, re, sys, hashlib
corpus, out, n, maxsize, want_json = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5] == "json"
words = set()
for line in open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "dict", "k8s.dict")):
    m = re.match(r'^"([A-Za-z][A-Za-z0-9_./:-]+)"$', line.strip())
    if m: words.add(m.group(1))
files = []
for name in os.listdir(corpus):
    data = open(os.path.join(corpus, name), "rb").read()
    if len(data) > maxsize or len(data) == 0: continue
    text = data.decode("utf-8", "replace")
    if want_json:
        try:
            v = json.loads(data)
            if not isinstance(v, dict): continue
        except Exception:
            continue
    feats = {w for w in words if w in text}
    # structure counts as a feature too: top-level keys, validity
    try:
        v = json.loads(data); feats.add("valid-json"); 
        if isinstance(v, dict) and isinstance(v.get("request"), dict):
            feats |= {"op:" + str(v["request"].get("operation")), "kind:" + str((v["request"].get("kind") or {}).get("kind") if isinstance(v["request"].get("kind"), dict) else None)}
    except Exception:
        feats.add("invalid-json")
    files.append((name, data, feats))
chosen, covered = [], set()
while len(chosen) < n and files:
    best = max(files, key=lambda f: (len(f[2] - covered), -len(f[1])))
    if not (best[2] - covered):
        # nothing new: take the remaining ones by size diversity
        files.sort(key=lambda f: len(f[1]))
        step = max(1, len(files) // (n - len(chosen)))
        for f in files[::step][: n - len(chosen)]:
            chosen.append(f)
        break
    chosen.append(best); covered |= best[2]; files.remove(best)
os.makedirs(out, exist_ok=True)
for name, data, feats in chosen:
    h = hashlib.sha1(data).hexdigest()[:12]
    open(os.path.join(out, f"corpus-{h}"), "wb").write(data)
print(len(chosen), "picked;", len(covered), "features covered; sizes", sorted(len(c[1]) for c in chosen))
