"""The SQLite recorder: WAL, ``synchronous=FULL`` by default, and group commit.

One writer owns the write connection on a thread of its own. Concurrent appends queue up; the writer drains
what is waiting into one transaction, decides every append with the pure ``plan_batch`` against rows read
inside that transaction, writes, commits, and only then answers. An answered append has been fsynced.

The whole transaction is one call on the writer thread (the stdlib ``sqlite3`` module): one thread hop per
group commit rather than one per statement. Reads go through aiosqlite on a second connection, so readers
never wait behind the writer (WAL). SQLite has one writer, so position order is commit order and a reader
tailing by position never skips a late commit. A lock file keeps a second process from writing the same log.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import sqlite3
import threading
import time
import urllib.parse
import zlib
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal

import aiosqlite
import msgspec

from store.errors import InvalidAppend, PositionTooOld, StoreClosed, StoreError
from store.recorder import (
    AppendRequest,
    BatchPlan,
    Existing,
    NewEvent,
    RecorderBase,
    ReplayFold,
    StoredEvent,
    plan_batch,
    validate_append,
)
from wire.files import private_file

SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    seq         INTEGER PRIMARY KEY,
    event_id    BLOB    NOT NULL UNIQUE,
    stream      TEXT    NOT NULL,
    version     INTEGER NOT NULL,
    type        TEXT    NOT NULL,
    schema      INTEGER NOT NULL,
    occurred_ns INTEGER NOT NULL,
    recorded_ns INTEGER NOT NULL,
    correlation BLOB,
    causation   BLOB,
    payload     BLOB    NOT NULL,
    checksum    INTEGER,
    UNIQUE (stream, version)
);
-- Current version per stream; it outlives truncation of the stream's events.
CREATE TABLE IF NOT EXISTS streams (stream TEXT PRIMARY KEY, version INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS snapshots (
    name TEXT PRIMARY KEY, position INTEGER NOT NULL, data BLOB NOT NULL
) WITHOUT ROWID;
INSERT OR IGNORE INTO meta (key, value) VALUES ('oldest', 1), ('schema', 1);
"""
COLUMNS = "seq, event_id, stream, version, type, schema, occurred_ns, recorded_ns, correlation, causation, payload"
INSERT_EVENT = f"INSERT INTO events ({COLUMNS}, checksum) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)"
SQLITE_MAGIC = b"SQLite format 3\x00"
UPSERT_STREAM = (
    "INSERT INTO streams (stream, version) VALUES (?, ?) ON CONFLICT (stream) DO UPDATE SET version = excluded.version"
)
SQL_VARS = 500  # ids per IN (...) query
log = logging.getLogger("corral.store")

Synchronous = Literal["OFF", "NORMAL", "FULL", "EXTRA"]


class LogLocked(StoreError):
    """Another writer (a process, or this one) holds the log open for writing."""


class CorruptLog(StoreError):
    """The log's file is damaged: an event whose checksum does not match, or a file that is no log."""


class ForeignCommit(StoreError):
    """Positions this writer did not write appeared in the log (a writer that bypassed the lock)."""

    def __init__(self, path: str, head: int, found: int, contiguous: bool = True) -> None:
        super().__init__(
            f"{path}: another writer committed to this log (its head is {found}, this writer's was {head}); "
            "nothing of this append was written, and the head is read again: send it again"
        )
        self.head, self.found, self.contiguous = head, found, contiguous


_OPEN: set[str] = set()  # real paths of the logs this process writes


def checksum(e: StoredEvent) -> int:
    """Two CRC-32s in one integer: of the payload (low 32 bits: what a replay, reading payloads alone, checks)
    and of every other column (31 bits above them). A flipped byte anywhere in the row is found when it is read."""
    head = b"\0".join(
        str(v).encode() for v in (e.position, e.stream, e.version, e.type, e.schema, e.occurred_ns, e.recorded_ns)
    )
    meta = zlib.crc32(head + b"\0" + e.event_id + b"\0" + (e.correlation or b"") + b"\0" + (e.causation or b""))
    return (meta & 0x7FFFFFFF) << 32 | zlib.crc32(e.payload)


def _verified(row: Sequence[Any], path: str, checked_from: int) -> StoredEvent:
    """A row of COLUMNS + checksum as an event, its checksum checked. Rows before ``checked_from`` were written
    before checksums were kept and may have none; from it on, a row without one is damaged (or was written by
    an older version of Corral brought back)."""
    event = StoredEvent(*row[:11])
    try:
        ok = checksum(event) == row[11] if row[11] is not None else row[0] < checked_from
    except (TypeError, ValueError, AttributeError):  # damage that changed a column's stored type
        ok = False
    if not ok:
        raise CorruptLog(f"{path}: the event at position {row[0]} does not match its checksum")
    return event


def _payloads(rows: list[tuple[bytes, int | None]], first: int, path: str, checked_from: int) -> list[bytes]:
    """The payloads of (payload, checksum) rows from position ``first`` on, each checked against its CRC."""
    crc32 = zlib.crc32
    for i, (payload, crc) in enumerate(rows):
        try:
            ok = crc32(payload) == crc & 0xFFFFFFFF if crc is not None else first + i < checked_from
        except TypeError:  # damage that changed a column's stored type
            ok = False
        if not ok:
            raise CorruptLog(f"{path}: the event at position {first + i} does not match its checksum")
    return [payload for payload, _ in rows]


class _Append:
    __slots__ = ("future", "request")

    def __init__(self, request: AppendRequest, future: asyncio.Future[list[int]]) -> None:
        self.request = request
        self.future = future


class _Job:
    """A write other than an append (truncate, snapshot): a function run on the writer thread."""

    __slots__ = ("future", "run")

    def __init__(self, run: Callable[[sqlite3.Connection], Any], future: asyncio.Future[Any]) -> None:
        self.run = run
        self.future = future


def read_only_uri(path: str) -> str:
    """The URI that opens the database at ``path`` read-only ('#', '?' and '%' in the path are quoted)."""
    return f"file:{urllib.parse.quote(path)}?mode=ro"


def _not_sqlite(path: str, *, empty_ok: bool) -> str | None:
    """Why the file at ``path`` is not an SQLite database (None: its header says it is; an empty file, when
    ``empty_ok``, is a database yet to be made)."""
    with open(path, "rb") as db:
        header = db.read(len(SQLITE_MAGIC))
    if header == SQLITE_MAGIC or (empty_ok and not header):
        return None
    return f"not an SQLite database (its first bytes are {header[:16]!r})"


def _store_error(path: str, e: Exception) -> StoreError:
    """An SQLite error as the store's own, naming the file: a damaged one as ``CorruptLog``."""
    if isinstance(e, sqlite3.DatabaseError) and any(
        words in str(e) for words in ("malformed", "not a database", "file is encrypted")
    ):
        return CorruptLog(f"{path}: the database is damaged: {e}")
    return StoreError(f"{path}: {type(e).__name__}: {e}")


def _chunks(items: list[Any], n: int) -> Iterable[list[Any]]:
    for i in range(0, len(items), n):
        yield items[i : i + n]


@contextlib.contextmanager
def _transaction(conn: sqlite3.Connection) -> Any:
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")
        raise
    try:
        conn.execute("COMMIT")
    except BaseException:  # a COMMIT that failed and was not rolled back by SQLite itself: never left open
        if conn.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
        raise


def _head(conn: sqlite3.Connection) -> int:
    last = conn.execute("SELECT MAX(seq) FROM events").fetchone()[0]
    return int(last) if last is not None else _oldest(conn) - 1


def _checksums_from(conn: sqlite3.Connection) -> int:
    row = conn.execute("SELECT value FROM meta WHERE key = 'checksums_from'").fetchone()
    return int(row[0]) if row else 2**62  # a log never opened by a version that keeps them: none required


def _oldest(conn: sqlite3.Connection) -> int:
    row = conn.execute("SELECT value FROM meta WHERE key = 'oldest'").fetchone()
    return int(row[0]) if row else 1


def _write_batch(conn: sqlite3.Connection, requests: list[AppendRequest], head: int, now_ns: int) -> BatchPlan:
    """One group commit, run on the writer thread: read what the plan needs, plan, write, commit.

    Retries are rare, so the batch is first planned without looking its event ids up. If that plan rejects
    any append (a stale version may be a retry of a stored append) or the UNIQUE index on event_id catches a
    stored id, the transaction is rolled back and the batch planned again with the lookup.
    """
    try:
        return _plan_and_write(conn, requests, head, now_ns, look_up_ids=False)
    except (sqlite3.IntegrityError, _LookUpIds):
        return _plan_and_write(conn, requests, head, now_ns, look_up_ids=True)


class _LookUpIds(Exception):
    pass


def _plan_and_write(
    conn: sqlite3.Connection, requests: list[AppendRequest], head: int, now_ns: int, *, look_up_ids: bool
) -> BatchPlan:
    with _transaction(conn):
        found = _head(conn)
        if found != head:
            between = "SELECT COUNT(*) FROM events WHERE seq > ? AND seq <= ?"
            contiguous = found > head and conn.execute(between, (head, found)).fetchone()[0] == found - head
            raise ForeignCommit("", head, found, contiguous)
        versions: dict[str, int] = {}
        for chunk in _chunks(sorted({r.stream for r in requests}), SQL_VARS):
            sql = f"SELECT stream, version FROM streams WHERE stream IN ({','.join('?' * len(chunk))})"
            versions.update(conn.execute(sql, chunk).fetchall())
        existing: dict[bytes, Existing] = {}
        for chunk in _chunks([e.event_id for r in requests for e in r.events] if look_up_ids else [], SQL_VARS):
            sql = f"SELECT event_id, seq, stream, version FROM events WHERE event_id IN ({','.join('?' * len(chunk))})"
            for event_id, seq, stream, version in conn.execute(sql, chunk):
                existing[event_id] = Existing(seq, stream, version)
        plan = plan_batch(requests, versions, existing, head, now_ns)
        if not look_up_ids and any(isinstance(r, StoreError) for r in plan.results):
            raise _LookUpIds
        if plan.rows:
            conn.executemany(INSERT_EVENT, [(*msgspec.structs.astuple(r), checksum(r)) for r in plan.rows])
            conn.executemany(UPSERT_STREAM, list(plan.versions.items()))
    return plan


class SqliteRecorder(RecorderBase):
    def __init__(
        self,
        *,
        path: str,
        writer: sqlite3.Connection,
        executor: ThreadPoolExecutor,
        reader: aiosqlite.Connection,
        lock_fd: int,
        head: int,
        clock: Callable[[], int],
        max_batch_events: int,
        max_waiting: int = 10_000,
        checked_from: int = 1,
    ) -> None:
        super().__init__()
        self._checked_from = checked_from  # from this position on every event has a checksum
        self._path = path
        self._w = writer
        self._executor = executor
        self._r = reader
        self._lock_fd = lock_fd
        self._watch.head = head
        self._clock = clock
        self._max_batch = max_batch_events
        self._queue: asyncio.Queue[_Append | _Job | None] = asyncio.Queue()
        self._room = asyncio.Semaphore(max_waiting)  # back-pressure: appends waiting for the writer, at most
        self._closed = False
        self._broken: CorruptLog | None = None  # the file changed under this writer: it writes no more
        self._writer = asyncio.create_task(self._run_writer(), name="sqlite-writer")
        self.batches = 0  # transactions committed (benchmarks, /metrics)
        self.appends = 0  # appends they held: appends / batches is how well the group commit groups

    @classmethod
    async def open(
        cls,
        path: str | Path,
        *,
        synchronous: Synchronous = "FULL",
        clock: Callable[[], int] = time.time_ns,
        max_batch_events: int = 2000,
        max_waiting: int = 10_000,
    ) -> SqliteRecorder:
        """Open (creating if needed) the log at ``path``. Raises ``LogLocked`` if another writer has it open
        (through any path to the same file), ``CorruptLog`` if the file is not a log, ``StoreError`` naming the
        file for any other SQLite failure."""
        path = await asyncio.to_thread(os.path.realpath, path)  # a symlink or another spelling: the same log
        if path in _OPEN:
            raise LogLocked(f"{path}: this process has this event log open for writing already")
        _OPEN.add(path)  # reserved at once: a second open meanwhile is told so
        try:
            return await cls._open(path, synchronous, clock, max_batch_events, max_waiting)
        except BaseException:
            _OPEN.discard(path)
            raise

    @classmethod
    async def _open(
        cls, path: str, synchronous: Synchronous, clock: Callable[[], int], max_batch_events: int, max_waiting: int
    ) -> SqliteRecorder:
        lock_fd = os.open(f"{path}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(lock_fd)
            raise LogLocked(f"{path}: another process has this event log open for writing") from None
        executor = ThreadPoolExecutor(1, thread_name_prefix="corral-sqlite-writer")
        loop = asyncio.get_running_loop()

        def setup() -> tuple[sqlite3.Connection, int, int]:
            # Events hold container specs and their environment: 0600, and SQLite gives its WAL and shared
            # memory files the database's mode.
            for f in (Path(path), Path(f"{path}-wal"), Path(f"{path}-shm")):
                if f == Path(path) or f.exists():
                    private_file(f)
            wrong = _not_sqlite(path, empty_ok=True)
            if wrong:
                raise CorruptLog(f"{path}: {wrong}")
            conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            try:
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute(f"PRAGMA synchronous={synchronous}")
                conn.execute("PRAGMA busy_timeout=10000")
                conn.executescript(SCHEMA)
                columns = {row[1] for row in conn.execute("PRAGMA table_info(events)")}
                if "checksum" not in columns:  # a log from before checksums: its old events stay unchecked
                    conn.execute("ALTER TABLE events ADD COLUMN checksum INTEGER")
                head = _head(conn)
                conn.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('checksums_from', ?)", (head + 1,))
                return conn, head, _checksums_from(conn)
            except BaseException:
                conn.close()
                raise

        made: asyncio.Future[tuple[sqlite3.Connection, int, int]] = loop.run_in_executor(executor, setup)
        writer: sqlite3.Connection | None = None
        try:
            writer, head, checked_from = await asyncio.shield(made)
            reader = await aiosqlite.connect(path, isolation_level=None)
            try:
                await reader.execute("PRAGMA busy_timeout=10000")
            except BaseException:
                await reader.close()
                raise
        except BaseException as e:
            if writer is None:  # cancelled while setting up: the connection it makes is closed, not abandoned
                with contextlib.suppress(BaseException):
                    writer, _, _ = await made
            if writer is not None:
                writer.close()
            executor.shutdown(wait=False)
            os.close(lock_fd)
            if isinstance(e, sqlite3.Error):
                raise _store_error(path, e) from e
            raise
        assert writer is not None
        return cls(
            path=str(path),
            writer=writer,
            executor=executor,
            reader=reader,
            lock_fd=lock_fd,
            head=head,
            clock=clock,
            max_batch_events=max_batch_events,
            max_waiting=max_waiting,
            checked_from=checked_from,
        )

    # --- writes ----------------------------------------------------------------------------------------

    async def append(
        self, stream: str, events: Sequence[NewEvent], expected_version: int, *, expected_head: int | None = None
    ) -> list[int]:
        if self._closed:
            raise StoreClosed("the recorder is closed")
        if self._broken is not None:
            raise self._broken
        validate_append(stream, events, expected_version, expected_head)
        async with self._room:  # a writer that falls behind slows its callers rather than queue without bound
            if self._closed:
                raise StoreClosed("the recorder is closed")
            future: asyncio.Future[list[int]] = asyncio.get_running_loop().create_future()
            request = AppendRequest(stream, tuple(events), expected_version, expected_head)
            self._queue.put_nowait(_Append(request, future))
            return await future

    async def _submit(self, run: Callable[[sqlite3.Connection], Any]) -> Any:
        if self._closed:
            raise StoreClosed("the recorder is closed")
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Job(run, future))
        return await future

    async def _run_writer(self) -> None:
        carry: _Append | _Job | None = None
        while True:
            job = carry if carry is not None else await self._queue.get()
            carry = None
            if job is None:
                return
            if isinstance(job, _Job):
                await self._run_job(job)
                continue
            batch = [job]
            size = len(job.request.events)
            while size < self._max_batch and not self._queue.empty():
                nxt = self._queue.get_nowait()
                if not isinstance(nxt, _Append):
                    carry = nxt
                    if nxt is None:
                        await self._commit(batch)
                        return
                    break
                batch.append(nxt)
                size += len(nxt.request.events)
            await self._commit(batch)

    async def _run_job(self, job: _Job) -> None:
        try:
            result = await asyncio.get_running_loop().run_in_executor(self._executor, job.run, self._w)
        except Exception as exc:
            if not job.future.done():
                job.future.set_exception(_store_error(self._path, exc) if isinstance(exc, sqlite3.Error) else exc)
        else:
            if not job.future.done():
                job.future.set_result(result)

    async def _commit(self, batch: list[_Append]) -> None:
        requests = [a.request for a in batch]
        loop = asyncio.get_running_loop()
        try:
            plan = await loop.run_in_executor(
                self._executor, _write_batch, self._w, requests, self._watch.head, self._clock()
            )
        except ForeignCommit as exc:
            failure: StoreError
            if exc.contiguous:
                self._watch.advance(exc.found)  # from here on, appends go after what the other writer wrote
                failure = ForeignCommit(self._path, exc.head, exc.found)
            else:  # events this writer acknowledged are gone, or a gap was written: never write on top of it
                why = "positions it acknowledged are gone" if exc.found < exc.head else "the log now has a gap"
                failure = self._broken = CorruptLog(
                    f"{self._path}: this writer's head is {exc.head}, the file's is {exc.found}: {why}; "
                    "no more appends (corral store verify; restore the log)"
                )
            log.error("%s", failure)
            for a in batch:
                if not a.future.done():
                    a.future.set_exception(failure)
            return
        except Exception as exc:
            failure = (
                exc
                if isinstance(exc, StoreError)
                else _store_error(self._path, exc)
                if isinstance(exc, sqlite3.Error)
                else StoreError(f"the append was not written: {exc!r}")
            )
            for a in batch:
                if not a.future.done():
                    a.future.set_exception(failure)
            return
        self.batches += 1
        self.appends += len(batch)
        if plan.rows:
            self._watch.advance(plan.rows[-1].position)
        for a, result in zip(batch, plan.results, strict=True):
            if a.future.done():
                continue
            if isinstance(result, StoreError):
                a.future.set_exception(result)
            else:
                a.future.set_result(result)

    async def truncate_before(self, position: int) -> int:
        """Delete events before ``position``; readers behind it then get ``PositionTooOld``."""
        head = self._watch.head

        def run(conn: sqlite3.Connection) -> int:
            if position > head + 1:
                raise InvalidAppend(f"position: cannot truncate before {position}, past the head {head}")
            with _transaction(conn):
                if position <= _oldest(conn):
                    return 0
                deleted = conn.execute("DELETE FROM events WHERE seq < ?", (position,)).rowcount
                conn.execute("UPDATE meta SET value = ? WHERE key = 'oldest'", (position,))
                return deleted

        return int(await self._submit(run))

    async def save_snapshot(self, name: str, position: int, data: bytes) -> None:
        def run(conn: sqlite3.Connection) -> None:
            with _transaction(conn):
                conn.execute(
                    "INSERT OR REPLACE INTO snapshots (name, position, data) VALUES (?, ?, ?)", (name, position, data)
                )

        await self._submit(run)

    # --- reads -----------------------------------------------------------------------------------------

    # Every read is one ``execute_fetchall``: the statement runs to its end and is reset on the reader's thread
    # in one call. A cursor left half-read (its reader cancelled mid-read) would keep a read transaction open
    # on the shared connection, and every later read would see that old snapshot.

    async def _rows(self, sql: str, params: tuple[Any, ...] = ()) -> list[Any]:
        try:
            return list(await self._r.execute_fetchall(sql, params))
        except sqlite3.Error as e:
            raise _store_error(self._path, e) from e

    async def _read_oldest(self) -> int:
        rows = await self._rows("SELECT value FROM meta WHERE key = 'oldest'")
        return int(rows[0][0]) if rows else 1

    async def read_all(
        self,
        from_position: int = 1,
        limit: int = 1000,
        *,
        to_position: int | None = None,
        types: Sequence[str] | None = None,
    ) -> list[StoredEvent]:
        if types is None and to_position is None:
            rows = await self._read_from(f"{COLUMNS}, checksum", from_position, limit)
            return [_verified(r, self._path, self._checked_from) for r in rows]
        if self._closed:
            raise StoreClosed("the recorder is closed")
        start = max(from_position, 1)
        where, params = ["seq >= ?"], list[object]([start])
        if to_position is not None:
            where.append("seq <= ?")
            params.append(to_position)
        if types is not None:
            if not types:
                return []
            where.append(f"type IN ({','.join('?' * len(types))})")
            params.extend(types)
        sql = f"SELECT {COLUMNS}, checksum FROM events WHERE {' AND '.join(where)} ORDER BY seq LIMIT ?"
        rows = await self._rows(sql, (*params, limit))
        oldest = await self._read_oldest()
        if start < oldest:
            raise PositionTooOld(start, oldest)
        return [_verified(r, self._path, self._checked_from) for r in rows]

    async def replay(
        self, from_position: int, fold: ReplayFold, batch: int = 10_000, to_position: int | None = None
    ) -> int:
        """Read and fold on one worker thread with a connection of its own: no hop between threads per batch,
        and the event loop stays free while a large log replays.

        Each batch is one read transaction: the head and the oldest position, then the payloads of the range
        ``[start, end]``. Positions are contiguous, so a range that yields exactly ``end - start + 1`` rows
        holds every position in it, in order, and the positions need not be read.
        """
        if self._closed:
            raise StoreClosed("the recorder is closed")
        stop = threading.Event()

        def run() -> int:
            conn = sqlite3.connect(read_only_uri(self._path), uri=True, isolation_level=None)
            try:
                start = max(from_position, 1)
                while not stop.is_set():
                    conn.execute("BEGIN")
                    try:
                        last, oldest = conn.execute(
                            "SELECT (SELECT MAX(seq) FROM events), (SELECT value FROM meta WHERE key = 'oldest')"
                        ).fetchone()
                        if start < oldest:
                            raise PositionTooOld(start, oldest)
                        end = min(start + batch - 1, last if last is not None else 0)
                        if to_position is not None:
                            end = min(end, to_position)
                        if end < start:
                            break
                        rows = conn.execute(
                            "SELECT payload, checksum FROM events WHERE seq BETWEEN ? AND ? ORDER BY seq", (start, end)
                        ).fetchall()
                    finally:
                        conn.execute("COMMIT")
                    if len(rows) != end - start + 1:
                        raise StoreError(f"the log has a gap between positions {start} and {end}")
                    fold(start, _payloads(rows, start, self._path, self._checked_from))
                    start = end + 1
                return start - 1
            finally:
                conn.close()

        try:
            return await asyncio.to_thread(run)
        except sqlite3.Error as e:
            raise _store_error(self._path, e) from e
        finally:
            stop.set()  # if this task was cancelled, the thread stops after its current batch

    async def _read_from(self, columns: str, from_position: int, limit: int) -> list[Any]:
        if self._closed:
            raise StoreClosed("the recorder is closed")
        start = max(from_position, 1)
        rows = await self._rows(f"SELECT {columns} FROM events WHERE seq >= ? ORDER BY seq LIMIT ?", (start, limit))
        # Positions are contiguous: a first row past ``start`` (or none at all) may mean truncation.
        if not rows or rows[0][0] != start:
            oldest = await self._read_oldest()
            if start < oldest:
                raise PositionTooOld(start, oldest)
        return rows

    async def read_stream(
        self,
        stream: str,
        from_version: int = 0,
        limit: int | None = None,
        *,
        to_version: int | None = None,
        backwards: bool = False,
    ) -> list[StoredEvent]:
        if self._closed:
            raise StoreClosed("the recorder is closed")
        top = to_version if to_version is not None else 2**62
        order = "DESC" if backwards else "ASC"
        rows = await self._rows(
            f"SELECT {COLUMNS}, checksum FROM events WHERE stream = ? AND version BETWEEN ? AND ? "
            f"ORDER BY version {order} LIMIT ?",
            (stream, from_version, top, -1 if limit is None else max(limit, 0)),
        )
        return [_verified(r, self._path, self._checked_from) for r in rows]

    async def stream_version(self, stream: str) -> int:
        rows = await self._rows("SELECT version FROM streams WHERE stream = ?", (stream,))
        return int(rows[0][0]) if rows else -1

    async def head(self) -> int:
        return self._watch.head

    async def oldest(self) -> int:
        return await self._read_oldest()

    async def load_snapshot(self, name: str) -> tuple[int, bytes] | None:
        rows = await self._rows("SELECT position, data FROM snapshots WHERE name = ?", (name,))
        return (int(rows[0][0]), bytes(rows[0][1])) if rows else None

    async def close(self) -> None:
        """Finish every queued write, then close. Appends after this raise ``StoreClosed``."""
        if self._closed:
            return
        self._closed = True
        self._queue.put_nowait(None)
        try:
            await self._writer
            self._watch.close()
            await self._r.close()
            await asyncio.get_running_loop().run_in_executor(self._executor, self._w.close)
            self._executor.shutdown(wait=True)
        finally:
            _OPEN.discard(self._path)
            os.close(self._lock_fd)


class Verified(msgspec.Struct, frozen=True):
    """What ``verify`` found: events checked, the first damaged position (None: none), and why."""

    path: str
    events: int
    unchecked: int  # written before checksums were kept
    first_bad: int | None = None
    reason: str = ""


def verify(path: str | Path, batch: int = 10_000) -> Verified:
    """Check a whole log offline (read-only; a writer may hold it): SQLite's own quick check, then every event
    in position order against its checksum, and that positions run without a gap from the oldest kept."""
    real = os.path.realpath(path)
    try:
        wrong = _not_sqlite(real, empty_ok=False)
        if wrong:
            return Verified(real, 0, 0, 0, wrong)
        conn = sqlite3.connect(read_only_uri(real), uri=True, isolation_level=None)
    except (OSError, sqlite3.Error) as e:
        return Verified(real, 0, 0, 0, str(e))
    try:
        problems = [row[0] for row in conn.execute("PRAGMA quick_check")]
        if problems != ["ok"]:
            return Verified(real, 0, 0, 0, "SQLite's quick check: " + "; ".join(problems[:5]))
        has_checksums = "checksum" in {row[1] for row in conn.execute("PRAGMA table_info(events)")}
        expected, checked, unchecked = _oldest(conn), 0, 0
        checked_from = _checksums_from(conn) if has_checksums else 2**62
        while True:
            rows = conn.execute(
                f"SELECT {COLUMNS}, {'checksum' if has_checksums else 'NULL'} FROM events WHERE seq >= ? "
                "ORDER BY seq LIMIT ?",
                (expected, batch),
            ).fetchall()
            if not rows:
                break
            for row in rows:
                if row[0] != expected:
                    if expected < (oldest := _oldest(conn)):  # truncated meanwhile by its writer: go on from there
                        expected = oldest
                        break
                    return Verified(real, checked, unchecked, expected, f"position {expected} is missing")
                try:
                    _verified(row, real, checked_from)
                except CorruptLog as e:
                    return Verified(real, checked, unchecked, expected, str(e).removeprefix(f"{real}: "))
                checked += 1
                unchecked += row[11] is None
                expected += 1
        head = expected - 1
        for name, position in conn.execute("SELECT name, position FROM snapshots"):
            if position > head:
                why = f"the log ends at position {head}, but its snapshot {name!r} was taken at {position}"
                return Verified(real, checked, unchecked, head + 1, why + ": acknowledged events are gone")
        return Verified(real, checked, unchecked)
    except (sqlite3.Error, TypeError, ValueError) as e:  # a row whose stored types are damaged, too
        return Verified(real, 0, 0, 0, f"{type(e).__name__}: {e}")
    finally:
        conn.close()
