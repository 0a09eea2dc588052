/// Where a connection is in its life. It only moves forward:
/// `open` → `closingAfterResponses` → `lingering` → closed (removed from the loop).
enum ConnectionPhase: Equatable {
    /// Reading requests and answering them.
    case open
    /// No more requests are read (a malformed request, a timeout, a response that closes
    /// the connection): what is queued is answered, then the connection lingers.
    case closingAfterResponses
    /// The write side is shut; what still arrives is read and dropped until the client
    /// closes or `until` passes, so the kernel does not reset the last response away.
    case lingering(until: Double)

    var isOpen: Bool { self == .open }
    var isLingering: Bool { if case .lingering = self { true } else { false } }

    /// Stop reading requests; a connection already lingering stays so.
    mutating func closeAfterResponses() {
        if self == .open { self = .closingAfterResponses }
    }

    /// Shut the write side and drain until `deadline`; false if it was lingering already.
    mutating func linger(until deadline: Double) -> Bool {
        guard !isLingering else { return false }
        self = .lingering(until: deadline)
        return true
    }
}
