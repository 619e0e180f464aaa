"""Start `graph-gateway serve` with bench-only switches, without touching gateway/.

    python bench/run_gateway.py [--uvloop] [--log-level LEVEL] -- serve --listen ... --upstream ...

--uvloop installs uvloop's event loop policy before the gateway's `asyncio.run()`;
--log-level WARNING drops the per-request INFO log line (to measure what it costs);
--gc-threshold N raises the youngest generation's GC threshold (default 700) and freezes the
objects created at start-up (`gc.freeze()`), to measure what the cyclic GC costs.
Everything after `--` goes to gateway.cli.main() unchanged.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--uvloop", action="store_true")
    parser.add_argument("--log-level", default="INFO")
    parser.add_argument("--gc-threshold", type=int)
    parser.add_argument("gateway_args", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    rest = args.gateway_args[1:] if args.gateway_args[:1] == ["--"] else args.gateway_args
    if args.uvloop:
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    from gateway import cli, logs

    if args.gc_threshold:
        import gc

        gc.set_threshold(args.gc_threshold, 50, 100)
        gc.freeze()

    level = getattr(logging, args.log_level.upper())
    configure = logs.configure
    logs.configure = lambda fmt, **kw: configure(fmt, **{**kw, "level": level})
    return cli.main(rest)


if __name__ == "__main__":
    sys.exit(main())
