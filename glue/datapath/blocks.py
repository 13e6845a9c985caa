"""Reading a landing file once, in blocks of whole lines, with ``pread`` into buffers the job
owns (never a mapping of the source: a file that shrinks while mapped kills a process with
SIGBUS; one read with pread is an error this module names).

A block ends after the last line end within ``block_bytes``; a line longer than a block is read
whole into a buffer of its own, up to ``schema.MAX_LINE_BYTES``. A longer line is not read into
memory at all: it comes as an ``OverlongLine`` (its first bytes and its length), which the job
quarantines. A UTF-8 byte order mark at the start of the file is skipped (it is no part of the
first line).
"""
import os

from chalicelib import schema

import jobio

BOM = b"\xef\xbb\xbf"
# How many leading bytes of an overlong line its quarantine entry keeps.
OVERLONG_PREFIX_BYTES = 1024
_SEARCH_BYTES = 1024 * 1024


class SourceChanged(jobio.JobError):
    """The source file changed while it was read: its lines cannot be trusted."""


def check_unchanged(name, before, after):
    """Raises SourceChanged unless the stat results ``before`` and ``after`` reading the source
    ``name`` agree on its size and modification time."""
    if (after.st_size, after.st_mtime_ns) != (before.st_size, before.st_mtime_ns):
        raise SourceChanged("%s changed while it was read (%d bytes, then %d): run the job again on the "
                            "finished object" % (name, before.st_size, after.st_size))


class Block:
    """``data[:size]``: whole lines (the last one may lack its LF at the end of the file)."""

    __slots__ = ("data", "size")

    def __init__(self, data, size):
        self.data, self.size = data, size


class OverlongLine:
    """A line longer than ``limit`` bytes: ``prefix`` (its first bytes) and ``length`` (bytes,
    the line end excluded)."""

    __slots__ = ("prefix", "length", "limit")

    def __init__(self, prefix, length, limit):
        self.prefix, self.length, self.limit = prefix, length, limit


class BlockReader:
    """Iterates over the file at ``path`` as Blocks and OverlongLines, in file order.

    ``buffers`` bytearrays of ``block_bytes`` are used in turn: a Block's data must be done with
    once ``buffers - 1`` more items have been read (the caller bounds what it keeps in flight).
    ``name`` is how errors name the source (its URI)."""

    def __init__(self, path, name, block_bytes, buffers, max_line=None):
        self.path, self.name, self.block_bytes = path, name, block_bytes
        self.max_line = schema.MAX_LINE_BYTES if max_line is None else max_line
        self._buffers = [bytearray(block_bytes) for _ in range(buffers)]
        self._turn = 0

    def __iter__(self):
        fd = os.open(self.path, os.O_RDONLY)
        try:
            before = os.fstat(fd)
            self._fd, self._size = fd, before.st_size
            offset = len(BOM) if self._read(0, len(BOM)) == BOM else 0
            while offset < self._size:
                item, offset = self._next(offset)
                yield item
            check_unchanged(self.name, before, os.fstat(fd))
        finally:
            os.close(fd)

    def _read(self, offset, length):
        return os.pread(self._fd, min(length, max(0, self._size - offset)), offset)

    def _read_into(self, buffer, at, offset, length):
        """Reads exactly ``length`` bytes of the file at ``offset`` into ``buffer[at:]``."""
        view = memoryview(buffer)
        try:
            while length:
                got = os.preadv(self._fd, [view[at:at + length]], offset)
                if got <= 0:
                    raise SourceChanged("%s changed while it was read: it ended at byte %d, %d bytes before its "
                                        "size when the job opened it; run the job again on the finished object"
                                        % (self.name, offset, self._size - offset))
                at, offset, length = at + got, offset + got, length - got
        finally:
            view.release()

    def _next(self, offset):
        """The item starting at ``offset`` and the offset after it."""
        buffer = self._buffers[self._turn]
        self._turn = (self._turn + 1) % len(self._buffers)
        length = min(self.block_bytes, self._size - offset)
        self._read_into(buffer, 0, offset, length)
        if offset + length == self._size:
            return Block(buffer, length), self._size
        cut = buffer.rfind(b"\n", 0, length) + 1
        if cut:
            return Block(buffer, cut), offset + cut
        return self._long_line(offset, bytes(buffer[:min(length, OVERLONG_PREFIX_BYTES)]))

    def _line_end(self, start):
        """The offset after the first LF at or after ``start`` (the file's size without one)."""
        while start < self._size:
            chunk = self._read(start, _SEARCH_BYTES)
            if not chunk:
                raise SourceChanged("%s changed while it was read: it ended at byte %d" % (self.name, start))
            found = chunk.find(b"\n")
            if found >= 0:
                return start + found + 1
            start += len(chunk)
        return self._size

    def _long_line(self, offset, prefix):
        """A line longer than a block, from ``offset``: read whole into a buffer of its own
        when it fits ``max_line``, else an OverlongLine."""
        end = self._line_end(offset + self.block_bytes)
        length = end - offset
        content = length - 1 if end <= self._size and self._ends_with_lf(end) else length
        if content > self.max_line:
            return OverlongLine(prefix, content, self.max_line), end
        buffer = bytearray(length)
        self._read_into(buffer, 0, offset, length)
        return Block(buffer, length), end

    def _ends_with_lf(self, end):
        return self._read(end - 1, 1) == b"\n"
