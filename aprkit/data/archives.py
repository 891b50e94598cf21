"""Safe extraction of downloaded archives: ``extract_archive(path, dest)``.

``.tar`` (``.gz``/``.bz2``/``.xz``) and ``.zip`` archives are extracted member by member into ``dest``, refusing:

- members that would land outside ``dest``, checked both by text (``os.path.normpath``: ``..`` and absolute names)
  and on the file system (``Path.resolve``);
- tar members reached through a symbolic link of the archive itself (a name, hard link target or symbolic link target
  that passes through a link the archive made earlier), and links made where an earlier member passed (they would
  redirect it after the fact): ``realpath`` gives up past ``PATH_MAX`` and then takes ``..`` by text, so a chain of
  links can point outside while every check says inside (CVE-2025-4517; tar's ``data`` filter before Python 3.11.13 /
  3.12.11 / 3.13.4 has the same gap). An archive that writes through its own links (``sub/ln -> ..``, then
  ``sub/ln/x``) is therefore refused; the published archives have no such members;
- on Pythons without tar's extraction filters, links with absolute targets, devices and FIFOs;
- links that would point outside the folder that is moved on (``links_within``) and a tar cut short between members.

``merge_tree(inner, target)`` moves an extracted tree into place; ``remove_tree(path)`` removes a half-extracted one.
"""

from __future__ import annotations

import errno
import os
import posixpath
import shutil
import tarfile
import zipfile
from pathlib import Path

__all__ = ["UnreadableArchive", "extract_archive", "merge_tree", "remove_tree"]


class UnreadableArchive(ValueError):
    """A file that is no readable archive (a download cut short, another file), as opposed to a refused member."""


def _check_member(dest: Path, name: str, archive: Path, link: str | None = None) -> None:
    """Refuse member ``name`` (or, given ``link``, the target ``name`` of the link member ``link``) outside ``dest``,
    by text (``..`` or an absolute path) and on the file system (where links already extracted lead)."""
    plain = os.path.normpath(name)
    target = (dest / name).resolve()
    if (os.path.isabs(plain) or plain.split(os.sep)[0] == ".."
            or (target != dest.resolve() and dest.resolve() not in target.parents)):
        what = f"a member {name!r}" if link is None else f"a link {link!r} to {name!r}"
        raise ValueError(f"archive {archive} has {what} outside the extraction folder; refusing to extract")


def extract_archive(path: str | os.PathLike, dest: str | os.PathLike, *, progress: bool = True,
                    links_within: str | None = None, check_end: bool = True) -> Path:
    """Extract a ``.tar``(``.gz``/``.bz2``/``.xz``) or ``.zip`` archive into ``dest``; returns ``dest``.

    Refuses (``ValueError``) the members listed in the module doc, before writing them. ``links_within``: a folder of
    the archive that is moved elsewhere after extraction: a symbolic link in it must point inside it without climbing
    above it (``up -> ..`` stays inside ``dest`` but, moved, would point above the new folder). With ``check_end``, a
    tar that ends without its end-of-archive block (a copy cut short between two members, which tarfile reads as
    complete) raises :class:`UnreadableArchive`.
    """
    from tqdm.auto import tqdm

    path, dest = Path(path), Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    # a tar first: is_zipfile looks for a zip's end record in the last 64 KiB, which a tar ending in a .zip member
    # (or in bytes that happen to spell the record) also holds; a zip never passes for a tar (its header checksum)
    if not tarfile.is_tarfile(path):
        if not zipfile.is_zipfile(path):
            raise UnreadableArchive(f"{path} is neither a tar nor a zip archive; expected the published archive")
        with zipfile.ZipFile(path) as zf:
            members = zf.infolist()
            for m in tqdm(members, desc=f"extract {path.name}", disable=not progress, leave=False):
                _check_member(dest, m.filename, path)
                zf.extract(m, dest)
        return dest
    with tarfile.open(path) as tf:
        links = _Links(path)
        for m in tqdm(tf, desc=f"extract {path.name}", disable=not progress, leave=False):
            _check_member(dest, m.name, path)
            _check_plain_member(m, path)  # devices, FIFOs, absolute links: named with the archive
            if m.issym():  # a symbolic link's target is relative to the link's folder
                to = os.path.join(os.path.dirname(m.name), m.linkname)
                _check_member(dest, to, path, m.name)
                if links_within is not None:
                    _check_link_stays(links_within, m, path)
            elif m.islnk():  # a hard link's target is relative to the archive's root
                _check_member(dest, m.linkname, path, m.name)
            links.check(m)
            if hasattr(tarfile, "data_filter"):  # (Python < 3.10.12 / 3.11.4 lack it: the checks above stand in)
                tf.extract(m, dest, filter="data")
            else:
                tf.extract(m, dest)
        if check_end:
            _check_tar_end(tf, path)
    return dest


class _Links:
    """The symbolic links a tar has made so far, and the folders its members' paths passed through: no member may be
    reached through one of those links (where it leads depends on the file system, and ``realpath`` gives up past
    ``PATH_MAX``), and no link may be made where an earlier path passed (it would redirect that path afterwards)."""

    def __init__(self, archive: Path) -> None:
        self.archive = archive
        self.links: set[str] = set()
        self.passed: set[str] = set()

    def check(self, m: tarfile.TarInfo) -> None:
        """Refuse ``m`` if a path of it goes through a link made earlier, or if it makes a link where an earlier
        path went; then record it."""
        paths = [m.linkname] if m.islnk() else []  # a hard link's target, from the archive's root
        if m.islnk() and posixpath.normpath(m.linkname).casefold() in self.links:
            # tarfile makes a hard link to a link whose target is missing as a copy of that link, elsewhere: its
            # relative target then leads somewhere else (outside the folder), unseen by the target checks
            raise ValueError(f"archive {self.archive} has a hard link {m.name!r} to its own symbolic link "
                             f"{m.linkname!r}; expected hard links to files, refusing to extract")
        if m.issym():
            paths.append(posixpath.join(posixpath.dirname(m.name), m.linkname))
        # compared case-folded: on a case-insensitive file system (macOS, Windows) a/x goes through a link named A
        name = posixpath.normpath(m.name).casefold()
        # a file, folder or hard link named as a link would be written (or its mode set) through the link
        for path, through in [(m.name, None if m.issym() else name), *((p, None) for p in paths)]:
            folders = [f.casefold() for f in _folders(path)]
            hit = next((f for f in [*folders, through] if f in self.links), None)
            if hit is not None:
                raise ValueError(f"archive {self.archive} has a member {m.name!r} reached through its own symbolic "
                                 f"link {hit!r} ({path!r}); expected members that no link of the archive leads to, "
                                 "refusing to extract")
            self.passed.update(folders)
        if m.issym():
            if name in self.passed:
                raise ValueError(f"archive {self.archive} has a symbolic link {m.name!r} where an earlier member's "
                                 "path passed; expected links that no other member goes through, refusing to extract")
            self.links.add(name)


def _folders(path: str) -> list[str]:
    """The folders ``path`` passes through, by text from the archive's root (``a/../b/c``: ``a``, ``b``): every
    prefix before a ``..`` counts, as the file system goes through it before climbing back."""
    out: list[str] = []
    stack: list[str] = []
    parts = [p for p in path.split("/") if p not in ("", ".")]
    for part in parts[:-1]:
        if part == "..":
            if stack:
                stack.pop()
            continue
        stack.append(part)
        out.append("/".join(stack))
    return out


def _check_link_stays(folder: str, m: tarfile.TarInfo, archive: Path) -> None:
    """Refuse a symbolic link in ``folder`` whose target climbs above ``folder`` at any step (``../folder/x`` comes
    back by the folder's name, which it will not have once moved); a link outside ``folder`` is not moved with it."""
    rel = Path(os.path.relpath(os.path.dirname(os.path.normpath(m.name)) or ".", os.path.normpath(folder)))
    if rel.parts[:1] == ("..",):
        return
    depth = len(rel.parts)  # the link's folder, below ``folder`` (Path(".").parts is empty)
    for part in m.linkname.split("/"):
        depth += -1 if part == ".." else 0 if part in ("", ".") else 1
        if depth < 0:
            raise ValueError(f"archive {archive} has a link {m.name!r} to {m.linkname!r} outside the extraction "
                             f"folder {folder!r}; refusing to extract")


def _check_tar_end(tf: tarfile.TarFile, archive: Path) -> None:
    """Refuse a tar whose members end without the zero block that closes every tar (tarfile takes the end of the file
    after any member as the end of the archive, so a copy cut short there would pass as complete)."""
    assert tf.fileobj is not None
    tf.fileobj.seek(tf.offset)
    if tf.fileobj.read(tarfile.BLOCKSIZE) != tarfile.NUL * tarfile.BLOCKSIZE:
        raise UnreadableArchive(f"{archive} ends after its member at byte {tf.offset} without tar's end-of-archive "
                                "block: the file was cut short; expected the complete published archive")


def _check_plain_member(m: tarfile.TarInfo, archive: Path) -> None:
    """Refuse the tar members that tar's ``data`` filter refuses and the checks above do not catch."""
    if (m.issym() or m.islnk()) and os.path.isabs(m.linkname):
        raise ValueError(f"archive {archive} has a link {m.name!r} to the absolute path {m.linkname!r}; expected "
                         "links inside the archive, refusing to extract")
    if not (m.isfile() or m.isdir() or m.issym() or m.islnk()):
        raise ValueError(f"archive {archive} has a member {m.name!r} that is a device or FIFO; expected files, folders "
                         "and links, refusing to extract")


def merge_tree(inner: Path, target: Path) -> None:
    """Move the extracted tree ``inner`` into ``target``, folder by folder: a published file replaces the one of
    its name, files ``target`` holds besides them stay (a folder completed in place kept only the archive's files:
    a user's own notes or stimuli in it were deleted). A user's link to a folder (``fog -> /disk2/fog``) is merged
    into. A move to another file system (``target`` or a folder in it may be a mount point) copies file by file, each
    under a temporary name renamed when whole: an interrupted merge leaves files missing, never a cut file under a
    published name that the layout check would pass."""
    target.mkdir(parents=True, exist_ok=True)
    for child in inner.iterdir():
        dest = target / child.name
        if child.is_dir() and not child.is_symlink() and dest.is_dir():
            merge_tree(child, dest)
            continue
        if dest.is_symlink():  # replaced as os.replace would: the link, not what it points to
            dest.unlink()
        elif dest.is_dir():  # a folder where the archive has a file: the archive's layout
            remove_tree(dest)
        elif dest.exists() and child.is_dir():  # a file where the archive has a folder: the same
            dest.unlink()
        try:
            os.replace(child, dest)  # one file system: atomic, whole folders at once (replacing a file on Windows too)
        except OSError as err:
            if err.errno != errno.EXDEV:
                raise
            if child.is_dir() and not child.is_symlink():
                merge_tree(child, dest)
                continue
            part = dest.with_name(f".{dest.name}.aprkit-part")
            shutil.copy2(child, part, follow_symlinks=False)
            os.replace(part, dest)
            child.unlink()


def remove_tree(path: str | os.PathLike) -> None:
    """Remove a folder left half-extracted (no error if it is absent)."""
    shutil.rmtree(path, ignore_errors=True)
