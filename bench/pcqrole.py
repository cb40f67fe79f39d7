"""`python -m bench.pcqrole produce|consume QUEUE N [--paced] [--dontflush]`: one role of a
pcq measurement, in its own process (on its own simulated host), printing JSON.

Rate: the producer puts N messages as fast as the queue takes them; the consumer reports
when it got the first and the last (CLOCK_MONOTONIC, shared by the processes of one machine).
Latency (--paced): the producer puts one message, waits until the consumer has taken it,
then puts the next; each side records its time per message (before the put, after the get),
so a message's one-way latency is the consumer's time minus the producer's.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from famfs_py import pcq


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.pcqrole")
    parser.add_argument("role", choices=("produce", "consume"))
    parser.add_argument("queue")
    parser.add_argument("count", type=int)
    parser.add_argument("--paced", action="store_true")
    parser.add_argument("--dontflush", action="store_true")
    args = parser.parse_args(argv)
    stats, stop = pcq.Stats(), pcq.Stop()
    clock = time.monotonic_ns
    times: list[int] = []
    if args.role == "produce":
        with pcq.Queue(args.queue, pcq.PRODUCER, flush=not args.dontflush) as q:
            producer = pcq.Producer(q, stats, stop)
            print(json.dumps({"ready": True}), flush=True)
            sys.stdin.readline()  # go
            start = clock()
            for _ in range(args.count):
                if args.paced:
                    while q.messages():  # the consumer has not taken the last one yet
                        os.sched_yield()
                    times.append(clock())
                producer.put()
            end = clock()
            producer.finish()
        out = {"start": start, "end": end, "sent": stats.nsent, "times": times}
    else:
        errors: list[str] = []
        with pcq.Queue(args.queue, pcq.CONSUMER, flush=not args.dontflush) as q:
            consumer = pcq.Consumer(q, stats, stop)
            print(json.dumps({"ready": True}), flush=True)
            first = 0
            for _ in range(args.count):
                if consumer.get() != pcq.GOOD:
                    break
                now = clock()
                first = first or now
                if args.paced:
                    times.append(now)
            last = clock()
            consumer.finish()
            errors = consumer.errors
        out = {
            "first": first,
            "last": last,
            "received": stats.nreceived,
            "errors": stats.nerrors,
            "messages": errors[:3],
            "times": times,
        }
    print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
