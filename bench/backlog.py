#!/usr/bin/env python3
"""A queue with a backlog: what each assignment costs the gateway while N customers wait.

Starts the `switchboard` binary (release build by default) on a free loopback port with
`bench/backlog.toml` (one chat workstream whose conversations wait for one agent of
capacity 1) and the durable store in a temporary directory, opens N customers that all wait,
then signs the agent in, who takes and ends K conversations one after another. Every
assignment moves everyone behind it in the queue. Reported: the wall time per assignment,
the `queue.position` frames the waiting customers received during the K assignments (and
per assignment), the gateway's CPU time over them (from /proc, Linux only), and how long
the routing engine's lock, which every routing event waits for, was held meanwhile (from
`/metrics`).

    python3 bench/backlog.py                          # 4,000 waiting, 100 assignments
    python3 bench/backlog.py --waiting 2000 --assignments 50 --gateway path/to/switchboard

Needs the `websockets` package (PyPI; `scripts/test.sh` installs it with streamdouble) and
about N + 50 open files (`ulimit -n`). BENCHMARKS.md ("Figures of this round") has its
figures before and after queue positions were limited to one a second per customer.
"""

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

import websockets

CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "backlog.toml")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid):
    """User + system CPU of a process, from /proc/<pid>/stat."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def lock_held_seconds(port):
    """The routing engine's lock held in all, from the gateway's /metrics."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics").read().decode()
    for line in text.splitlines():
        if line.startswith("switchboard_engine_lock_held_seconds_total "):
            return float(line.split()[1])
    sys.exit("no switchboard_engine_lock_held_seconds_total in /metrics")


async def wait_listening(port, proc):
    for _ in range(200):
        if proc.poll() is not None:
            sys.exit(f"the gateway exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.1):
                return
        except OSError:
            await asyncio.sleep(0.05)
    sys.exit("the gateway did not listen within 10 s")


async def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--gateway", default="target/release/switchboard")
    ap.add_argument("--waiting", type=int, default=4000)
    ap.add_argument("--assignments", type=int, default=100)
    o = ap.parse_args()
    if o.assignments >= o.waiting:
        sys.exit("--assignments must be below --waiting")

    port = free_port()
    url = f"ws://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory() as tmp:
        log = open(os.path.join(tmp, "gateway.log"), "w")
        listen = f"127.0.0.1:{port}"
        proc = subprocess.Popen(
            [o.gateway, "serve", "--config", CONFIG, "--listen", listen, "--data-dir", os.path.join(tmp, "data")],
            stdout=log,
            stderr=log,
        )
        try:
            await wait_listening(port, proc)
            await run(o, url, port, proc.pid)
        finally:
            proc.terminate()
            proc.wait(timeout=10)


async def run(o, url, port, pid):
    positions = 0
    counting = False

    async def customer(i, started):
        nonlocal positions
        ws = await websockets.connect(url + "/v1/chat", max_queue=None)
        start = {"workstream": "ChatWorkStream", "user": {"name": f"c{i}"}}
        await ws.send(json.dumps({"type": "event", "name": "session.start", "value": start}))
        async for m in ws:
            a = json.loads(m)
            if a.get("name") == "session.started":
                started.set()
            elif a.get("name") == "queue.position" and counting:
                positions += 1

    tasks = []
    for i in range(o.waiting):
        started = asyncio.Event()
        tasks.append(asyncio.create_task(customer(i, started)))
        await started.wait()
        if i % 500 == 499:
            print(f"  {i + 1} customers waiting", file=sys.stderr)

    body = b"grant_type=client_credentials&client_id=alice&client_secret=alice-demo-secret"
    req = urllib.request.Request(f"http://127.0.0.1:{port}/v1/token", data=body)
    token = json.loads(urllib.request.urlopen(req).read())["access_token"]
    # Let the customers' own first positions arrive before counting.
    await asyncio.sleep(1)
    counting = True
    cpu0, held0, t0 = cpu_seconds(pid), lock_held_seconds(port), time.monotonic()
    agent = await websockets.connect(
        url + "/v1/agent", additional_headers={"Authorization": "Bearer " + token}, max_queue=None
    )
    taken = 0
    async for m in agent:
        a = json.loads(m)
        if a.get("name") == "conversation.assigned" and "transcript" in (a.get("value") or {}):
            if taken == o.assignments:
                break
            taken += 1
            conv = a["conversation"]["id"]
            await agent.send(json.dumps({"type": "endOfConversation", "conversation": {"id": conv}}))
    wall = time.monotonic() - t0
    # The last positions told at the end of their second, then the CPU they cost.
    await asyncio.sleep(1.5)
    cpu = cpu_seconds(pid) - cpu0
    held = lock_held_seconds(port) - held0
    n = o.assignments
    print(f"{n} assignments with {o.waiting} waiting: {wall:.2f} s ({1000 * wall / n:.1f} ms each)")
    print(f"queue.position frames to the waiting customers: {positions} ({positions / n:.1f} per assignment)")
    print(f"gateway CPU: {cpu:.2f} s ({1000 * cpu / n:.2f} ms per assignment)")
    print(f"routing engine's lock held: {held:.3f} s ({1000 * held / n:.2f} ms per assignment)")
    for t in tasks:
        t.cancel()


if __name__ == "__main__":
    asyncio.run(main())
