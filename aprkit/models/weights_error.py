"""The error for pretrained weights that could not be loaded (timm, torchvision, robustbench): a cache folder that is
not writable or full, a damaged file already in the cache, or no network, each with what to do about it; and the
timeout a torch.hub download gets on a stalled connection."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from pathlib import Path

__all__ = ["HUB_STALL_TIMEOUT", "stall_timeout", "weights_error"]


def weights_error(what: str, source: str, looked: str, e: BaseException, env: str, *, random_init: bool = True,
                   cached: Path | None = None) -> OSError:
    """The error for weights that could not be loaded: this machine's cache folder (unwritable, full: ``env`` names
    the variable that moves it), a file already in the cache that cannot be read (``cached``) or the network
    (offline: how to supply them)."""
    from ..data.download import DownloadError, is_local_error

    first_line = str(e).splitlines()[0] if str(e) else ""
    if is_local_error(e):
        return DownloadError(
            f"could not store the pretrained weights of {what} from {source} ({type(e).__name__}: {first_line}); "
            f"looked in {looked}. The cache folder must be writable and have free space: fix it or set {env} to "
            "another folder, or pass checkpoint=FILE (aprkit eval --checkpoint FILE)"
        )
    if cached is not None:  # the file was in the cache before the call: nothing was downloaded, it is unreadable
        return DownloadError(
            f"could not load the pretrained weights of {what} ({type(e).__name__}: {first_line}): the cached file "
            f"{cached} cannot be read (damaged or cut short). Delete it and run again to download it afresh from "
            f"{source}, or replace it, or pass checkpoint=FILE (aprkit eval --checkpoint FILE)")
    return DownloadError(
        f"could not load the pretrained weights of {what} from {source} ({type(e).__name__}: {first_line}); "
        f"looked in {looked}. Offline: fill that cache on a machine with internet (or copy it here), or pass "
        "checkpoint=FILE (aprkit eval --checkpoint FILE)"
        + ("; random weights only with random_init=True (--random-init)" if random_init else "")
    )


#: seconds a torch.hub download may wait on a silent connection (it opens URLs without a timeout: a stalled
#: connection or proxy hung the call for ever)
HUB_STALL_TIMEOUT = 60.0

_STALL_LOCK = threading.Lock()
_STALL_USERS = [0]  # the downloads inside stall_timeout now: the last one out restores the default


@contextlib.contextmanager
def stall_timeout(downloads: bool) -> Iterator[None]:
    """While a torch.hub download may run, sockets opened without a timeout get :data:`HUB_STALL_TIMEOUT`. It is the
    process-wide default, so sockets other threads open meanwhile get it too; overlapping downloads share it, the
    last one restores ``None``, and a default of the caller's own (set before, or meanwhile) is left as it is."""
    import socket

    if not downloads:
        yield
        return
    with _STALL_LOCK:
        ours = _STALL_USERS[0] > 0 or socket.getdefaulttimeout() is None
        if ours:
            _STALL_USERS[0] += 1
            if _STALL_USERS[0] == 1:  # the first one in sets it; a later one keeps what is there (a caller's own)
                socket.setdefaulttimeout(HUB_STALL_TIMEOUT)
    try:
        yield
    finally:
        if ours:
            with _STALL_LOCK:
                _STALL_USERS[0] -= 1
                if _STALL_USERS[0] == 0 and socket.getdefaulttimeout() == HUB_STALL_TIMEOUT:
                    socket.setdefaulttimeout(None)
