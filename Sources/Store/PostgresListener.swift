import CPostgres
import Foundation
import Synchronization

/// PostgreSQL's LISTEN/NOTIFY for one channel: a connection of its own, and a thread that
/// waits on its socket and hands each notification's payload to `received`. A lost
/// connection is opened again with back-off, and `reconnected` runs then: notifications sent
/// meanwhile are gone, so whoever listens must look for what it missed (the pollers that
/// back every notification up).
public final class PostgresListener: Sendable {
    public let channel: String
    private let url: String
    private let received: @Sendable (String) -> Void
    private let reconnected: @Sendable () -> Void
    private let stopping = Atomic<Bool>(false)
    private let finished = DispatchSemaphore(value: 0)

    /// `channel` is an SQL identifier of letters, digits and underscores.
    public init(url: String, channel: String, received: @escaping @Sendable (String) -> Void, reconnected: @escaping @Sendable () -> Void = {}) {
        precondition(channel.allSatisfy { $0.isLetter || $0.isNumber || $0 == "_" }, "a channel is a plain identifier")
        self.url = url
        self.channel = channel
        self.received = received
        self.reconnected = reconnected
    }

    public func start() {
        let thread = Thread { [self] in listen() }
        thread.name = "pg-listen"
        thread.start()
    }

    /// Stops within about a second.
    public func stop() {
        stopping.store(true, ordering: .relaxed)
        _ = finished.wait(timeout: .now() + 2)
    }

    private func listen() {
        defer { finished.signal() }
        var delay = 0.25, connectedBefore = false
        while !stopping.load(ordering: .relaxed) {
            guard let handle = PQconnectdb(url) else { return }
            defer { PQfinish(handle) }
            if PQstatus(handle) == CONNECTION_OK, let result = PQexec(handle, "LISTEN \(channel)") {
                let listening = PQresultStatus(result) == PGRES_COMMAND_OK
                PQclear(result)
                if listening {
                    delay = 0.25
                    if connectedBefore { reconnected() }
                    connectedBefore = true
                    drain(handle)
                }
            }
            guard !stopping.load(ordering: .relaxed) else { break }
            Thread.sleep(forTimeInterval: delay)
            delay = min(delay * 2, 5)
        }
    }

    /// Hands notifications over until the connection fails or the listener stops.
    private func drain(_ handle: OpaquePointer) {
        let socket = PQsocket(handle)
        while !stopping.load(ordering: .relaxed) {
            var descriptor = pollfd(fd: socket, events: Int16(POLLIN), revents: 0)
            let ready = poll(&descriptor, 1, 500)
            if ready < 0 && errno != EINTR { return }
            guard ready > 0 else { continue }
            guard PQconsumeInput(handle) == 1, PQstatus(handle) == CONNECTION_OK else { return }
            while let notification = PQnotifies(handle) {
                let payload = notification.pointee.extra.map { String(cString: $0) } ?? ""
                PQfreemem(notification)
                received(payload)
            }
        }
    }
}
