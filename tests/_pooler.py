"""A connection pooler for the tests, in transaction mode as PgBouncer's ``pool_mode``.

Many deployments reach PostgreSQL through a pooler (PgBouncer, Supabase's and
Neon's poolers, Supavisor) that lends a server connection to a client for one
transaction at a time. Whatever a session keeps between transactions (a
prepared statement, a ``SET``, a ``LISTEN``, a session-level advisory lock)
is then left on a server connection the client's next transaction may not get.
This pooler does the same, in a thread of the test process, so that the tests
see what such a deployment sees without PgBouncer being installed.

It speaks enough of the wire protocol (version 3) for libpq: it refuses SSL and
GSS encryption (the client goes on in the clear, as with ``sslmode=prefer``),
answers the client's start-up itself (the login is trusted, as the test
cluster's local socket is), and then passes messages both ways. Of the
client's start-up settings it keeps only ``application_name``, set on each
server connection it lends (as PgBouncer does). A client gets a
server connection when it sends a message while it has none, and gives it back
when the server says it is idle (``ReadyForQuery`` with status ``I``) and no
answer is still due. Server connections are lent in turn (all ``size`` of them
opened first, then the one idle the longest), so that even one client's
transactions land on different ones, as they do under load. Like PgBouncer
(before 1.21, or with ``max_prepared_statements = 0``), it does nothing about
prepared statements: a statement prepared on one server connection is unknown
on the next.

It counts what a test may check: ``transactions`` (server connections lent)
and ``server_connections`` (opened).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import struct
import threading
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field

_PROTOCOL_3 = 196608
_SSL_REQUEST = 80877103
_GSS_REQUEST = 80877104
_CANCEL_REQUEST = 80877102


@dataclass(eq=False)  # told apart by identity: kept in a set
class _Server:
    """A connection to the real server, lent to one client at a time."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    broken: bool = False
    application_name: str = ""


@dataclass(eq=False)
class _Session:
    """What one client has: the server connection lent to it, and the answers it awaits."""

    server: _Server | None = None
    answers: asyncio.Task[None] | None = None  # passes the lent connection's messages on
    due: int = 0  # ReadyForQuery messages still to come (a Sync or a Query each)
    open_batch: bool = False  # a message sent since the last Sync or Query
    status: bytes = b"I"  # the last ReadyForQuery's: idle, in a transaction, failed


@dataclass
class _Pool:
    """The server connections of one (user, database)."""

    user: str
    database: str
    idle: deque[_Server] = field(default_factory=deque)
    parameters: list[bytes] = field(default_factory=list)  # ParameterStatus messages


async def _read_message(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    """One typed message: its type byte and its whole bytes (type, length and body)."""
    head = await reader.readexactly(5)
    (length,) = struct.unpack("!I", head[1:5])
    body = await reader.readexactly(length - 4)
    return head[:1], head + body


def _message(kind: bytes, body: bytes) -> bytes:
    return kind + struct.pack("!I", len(body) + 4) + body


class TransactionPooler:
    """A pooler in transaction mode in front of a PostgreSQL server's Unix socket.

    Args:
        socket_path: The server's socket file (``.../.s.PGSQL.<port>``), where
            the login is trusted.
        size: The most server connections per user and database.
    """

    def __init__(self, socket_path: str, size: int = 6) -> None:
        self._socket_path = socket_path
        self._size = size
        self._pools: dict[tuple[str, str], _Pool] = {}
        self._opened: dict[tuple[str, str], int] = {}
        self._free = asyncio.Condition()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="test-pooler", daemon=True
        )
        self._listener: asyncio.base_events.Server | None = None
        self._clients: set[asyncio.StreamWriter] = set()
        self._servers: set[_Server] = set()  # every server connection opened and not closed
        self._keys = itertools.count(1)
        self.port = 0
        self.transactions = 0
        self.server_connections = 0

    # --- lifecycle -------------------------------------------------------------------

    def start(self) -> TransactionPooler:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._listen(), self._loop).result(10)
        return self

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(self._close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def url(self, database: str, user: str = "postgres") -> str:
        """A URL to ``database`` through the pooler (over TCP on 127.0.0.1)."""
        return f"postgresql://{user}@127.0.0.1:{self.port}/{database}?sslmode=disable"

    async def _listen(self) -> None:
        self._listener = await asyncio.start_server(self._client, "127.0.0.1", 0)
        self.port = self._listener.sockets[0].getsockname()[1]

    async def _close(self) -> None:
        """Close every socket and end every task, so that nothing is left to the collector."""
        if self._listener is not None:
            self._listener.close()
        for writer in [*self._clients, *(server.writer for server in self._servers)]:
            writer.close()
        for pool in self._pools.values():
            pool.idle.clear()
        tasks = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for writer in [*self._clients, *(server.writer for server in self._servers)]:
            with contextlib.suppress(Exception):
                await writer.wait_closed()
        if self._listener is not None:
            await self._listener.wait_closed()

    # --- server connections ----------------------------------------------------------

    async def _open(self, pool: _Pool) -> _Server:
        reader, writer = await asyncio.open_unix_connection(self._socket_path)
        fields = b"user\0" + pool.user.encode() + b"\0database\0" + pool.database.encode() + b"\0\0"
        writer.write(struct.pack("!II", len(fields) + 8, _PROTOCOL_3) + fields)
        await writer.drain()
        parameters = []
        while True:
            kind, message = await _read_message(reader)
            if kind == b"E":
                writer.close()
                raise ConnectionError(message[5:].decode(errors="replace"))
            if kind == b"S":
                parameters.append(message)
            if kind == b"Z":
                break
        if not pool.parameters:
            pool.parameters = parameters
        self.server_connections += 1
        server = _Server(reader, writer)
        self._servers.add(server)
        return server

    async def _acquire(self, pool: _Pool) -> _Server:
        key = (pool.user, pool.database)
        async with self._free:
            while True:
                # Up to ``size`` connections are opened before any is lent again: the
                # transactions of even one client then go round them all.
                if self._opened.get(key, 0) < self._size:
                    self._opened[key] = self._opened.get(key, 0) + 1
                    break
                while pool.idle:
                    server = pool.idle.popleft()
                    # An idle connection the server ended (a restart, pg_terminate_backend)
                    # has its last words, or its end, read already by the event loop.
                    ended = server.reader.at_eof() or len(server.reader._buffer) > 0
                    if not server.broken and not ended and not server.writer.is_closing():
                        return server
                    self._opened[key] -= 1
                    self._servers.discard(server)
                    server.writer.close()
                if self._opened[key] < self._size:
                    continue
                await self._free.wait()
        try:
            server = await self._open(pool)
        except BaseException:
            async with self._free:
                self._opened[key] -= 1
                self._free.notify()
            raise
        return server

    async def _lend(self, pool: _Pool, application_name: str) -> _Server:
        """A server connection for a client, set to the client's ``application_name`` first.

        PgBouncer does the same (it tracks ``application_name`` among a few
        parameters), so that ``pg_stat_activity`` names the client a server
        connection works for.
        """
        self.transactions += 1
        while True:
            server = await self._acquire(pool)
            if server.application_name == application_name:
                return server
            quoted = application_name.replace("'", "''")
            try:
                query = f"SET application_name = '{quoted}'\0".encode()
                server.writer.write(_message(b"Q", query))
                await server.writer.drain()
                failed = False
                while True:  # its answers are the pooler's, not the client's
                    kind, _answer = await _read_message(server.reader)
                    failed = failed or kind == b"E"
                    if kind == b"Z":
                        break
            except (asyncio.IncompleteReadError, ConnectionError, OSError):
                failed = True
            if not failed:
                server.application_name = application_name
                return server
            server.broken = True  # ended meanwhile (a restart, a cut): another one
            await self._release(pool, server, reuse=False)

    async def _release(self, pool: _Pool, server: _Server, *, reuse: bool) -> None:
        async with self._free:
            if reuse and not server.broken:
                pool.idle.append(server)
            else:
                server.writer.close()
                self._servers.discard(server)
                self._opened[(pool.user, pool.database)] -= 1
            self._free.notify()

    # --- clients ---------------------------------------------------------------------

    async def _startup(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> tuple[_Pool, str] | None:
        """Read the client's start-up (after refusing encryption) and answer it.

        Its pool, and the ``application_name`` it asked for.
        """
        while True:
            (length,) = struct.unpack("!I", await reader.readexactly(4))
            body = await reader.readexactly(length - 4)
            (code,) = struct.unpack("!I", body[:4])
            if code in (_SSL_REQUEST, _GSS_REQUEST):
                writer.write(b"N")
                await writer.drain()
                continue
            if code != _PROTOCOL_3:
                return None  # a cancel request, or another protocol: not served here
            break
        parts = body[4:].split(b"\0")
        settings = dict(zip(parts[0::2], parts[1::2], strict=False))
        user = settings.get(b"user", b"postgres").decode()
        database = settings.get(b"database", user.encode()).decode()
        key = (user, database)
        pool = self._pools.get(key)
        if pool is None:
            pool = self._pools[key] = _Pool(user, database)
        if not pool.parameters:  # learn the server's parameters from a first connection
            await self._release(pool, await self._acquire(pool), reuse=True)
        writer.write(_message(b"R", struct.pack("!I", 0)))  # AuthenticationOk
        for parameter in pool.parameters:
            writer.write(parameter)
        writer.write(_message(b"K", struct.pack("!II", 1_000_000 + next(self._keys), 0)))
        writer.write(_message(b"Z", b"I"))
        await writer.drain()
        return pool, settings.get(b"application_name", b"").decode()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._clients.add(writer)
        session = _Session()
        pool: _Pool | None = None
        try:
            started = await self._startup(reader, writer)
            if started is None:
                return
            pool, application_name = started
            while True:
                kind, message = await _read_message(reader)
                if kind == b"X":  # Terminate
                    break
                server = session.server
                if server is None:
                    server = session.server = await self._lend(pool, application_name)
                    session.answers = asyncio.create_task(
                        self._answers(pool, server, writer, session)
                    )
                if kind in (b"S", b"Q"):  # Sync, Query: each is answered by a ReadyForQuery
                    session.due += 1
                    session.open_batch = False
                else:
                    session.open_batch = True
                server.writer.write(message)
                await server.writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, OSError):
            pass
        finally:
            self._clients.discard(writer)
            writer.close()
            server = session.server
            if server is not None and pool is not None:
                session.server = None
                if session.answers is not None:
                    session.answers.cancel()
                # Given back only when idle between transactions, as PgBouncer does.
                idle = session.due == 0 and not session.open_batch and session.status == b"I"
                await self._release(pool, server, reuse=idle)

    async def _answers(
        self, pool: _Pool, server: _Server, client: asyncio.StreamWriter, session: _Session
    ) -> None:
        """Pass the server's messages to the client; give the server back once it is idle."""
        try:
            while True:
                kind, message = await _read_message(server.reader)
                client.write(message)
                if kind == b"Z":
                    session.due -= 1
                    session.status = message[5:6]
                    if session.due <= 0 and not session.open_batch and session.status == b"I":
                        # Let go before any await: the client's next message gets another.
                        session.due = 0
                        session.server = session.answers = None
                        await self._release(pool, server, reuse=True)
                        await client.drain()
                        return
                await client.drain()
        except (asyncio.IncompleteReadError, ConnectionError, OSError):
            server.broken = True
            client.close()  # the server went away: so does the client's session


@contextlib.contextmanager
def transaction_pooler(socket_path: str, size: int = 6) -> Iterator[TransactionPooler]:
    """A started :class:`TransactionPooler`, stopped afterwards."""
    pooler = TransactionPooler(socket_path, size).start()
    try:
        yield pooler
    finally:
        pooler.stop()
