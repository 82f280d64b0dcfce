"""A process that logs records until SIGTERM, then closes the LogService (test helper).

    python -m tests.log.sigterm_worker DATABASE_URL HOME
prints ``ready`` once open, and ``submitted N`` after a clean close; ids are
``chatcmpl-sig-0000000`` .. N-1.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

from gateway.log.service import LogService
from tests.log.records import make_record


async def main(url: str, home: Path) -> None:
    service = await LogService.open(url, home)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    n = 0
    while not stop.is_set():
        for _ in range(50):
            service.submit(make_record(n, id=f"chatcmpl-sig-{n:07d}"))
            n += 1
        await asyncio.sleep(0.002)  # like a busy gateway: ~20k records/s
    await service.close()
    sys.stdout.write(f"submitted {n}\n")
    sys.stdout.flush()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], Path(sys.argv[2])))
