#!/usr/bin/env python3
"""Writes a replay file of exec events, one in 1,000 a crypto miner (the
crypto-miner rule's alert), the others curl with varied arguments: the
workload of scripts/bench-python-rules.sh and scripts/bench-rule-targets.sh.

    scripts/miner-execs.py OUT.jsonl EVENTS
"""
import json
import sys

path, n = sys.argv[1], int(sys.argv[2])
with open(path, "w") as f:
    f.write('{"vigil-replay": 1}\n')
    for i in range(n):
        if i % 1000 == 0:
            argv, exe = ["xmrig", "-o", "stratum+tcp://pool.example:3333", f"--marker={i}"], "/tmp/xmrig"
        else:
            argv, exe = ["curl", "-s", f"https://example.com/{i}", "-o", "/dev/null"], "/usr/bin/curl"
        e = {"kind": "process-exec", "time_ns": 1_763_000_000_000_000_000 + i * 1000,
             "process": {"pid": 1000 + i % 30000, "tgid": 1000 + i % 30000, "ppid": 1, "comm": exe.rsplit("/", 1)[1],
                         "exe": exe, "argv": argv, "cwd": "/", "ancestry": [{"pid": 1, "comm": "sh", "exe": "/bin/sh"}]}}
        f.write(json.dumps(e) + "\n")
