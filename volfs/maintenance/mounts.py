"""Which mounts of a volume are alive, on this machine and (distributed) on others.

For the guards on lossy actions: ``volume delete`` refuses while any is.
"""

from __future__ import annotations

from pathlib import Path

from volfs import locks
from volfs.maintenance.bucket_gc import MIN_PIN_TIMEOUT
from volfs.store import Store


def live_mounts(store: Store, volume_id: str) -> list[str]:
    """One description per live mount of ``volume_id``: ``PATH`` here, ``MOUNT on MACHINE``
    elsewhere. Here, a mount is live while its daemon holds its overlay's lock (whatever
    its PID namespace); elsewhere, while its pin's heartbeat is recent."""
    found: list[str] = []
    local: set[str] = set()
    for record in store.catalog.list_mounts():
        if record.volume_id == volume_id and locks.held(Path(record.overlay) / "lock"):
            found.append(record.path)
            local.add(record.id)
    for pin in store.catalog.live_pins(MIN_PIN_TIMEOUT):
        if pin.volume_id == volume_id and pin.mount_id not in local:
            found.append(f"{pin.mount_id} on {pin.machine}")
    return found
