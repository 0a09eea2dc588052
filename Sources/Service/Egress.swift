import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// An IPv4 or IPv6 network in CIDR notation (`10.0.0.0/8`, `fd00::/8`, `127.0.0.1`).
public struct IPNetwork: Sendable, Equatable, CustomStringConvertible {
    /// 4 or 16 bytes.
    public let address: [UInt8]
    public let prefix: Int

    public init?(_ text: String) {
        let parts = text.split(separator: "/", maxSplits: 1).map(String.init)
        guard let first = parts.first, let bytes = IPNetwork.parseAddress(first) else { return nil }
        let bits = bytes.count * 8
        if parts.count == 2 {
            guard let prefix = Int(parts[1]), (0...bits).contains(prefix) else { return nil }
            self.prefix = prefix
        } else {
            prefix = bits
        }
        address = bytes
    }

    public var description: String {
        address.count == 4 ? address.map(String.init).joined(separator: ".") + "/\(prefix)" : IPNetwork.format(address) + "/\(prefix)"
    }

    public func contains(_ bytes: [UInt8]) -> Bool {
        guard bytes.count == address.count else { return false }
        var remaining = prefix
        for i in 0..<bytes.count where remaining > 0 {
            let take = min(8, remaining)
            let mask = UInt8(truncatingIfNeeded: 0xFF << (8 - take))
            if bytes[i] & mask != address[i] & mask { return false }
            remaining -= take
        }
        return true
    }

    static func parseAddress(_ text: String) -> [UInt8]? {
        var v4 = in_addr()
        if inet_pton(AF_INET, text, &v4) == 1 { return withUnsafeBytes(of: &v4) { Array($0) } }
        var v6 = in6_addr()
        if inet_pton(AF_INET6, text, &v6) == 1 { return withUnsafeBytes(of: &v6) { Array($0) } }
        return nil
    }

    static func format(_ bytes: [UInt8]) -> String {
        var buffer = [CChar](repeating: 0, count: 64)
        let family = bytes.count == 4 ? AF_INET : AF_INET6
        _ = bytes.withUnsafeBytes { inet_ntop(family, $0.baseAddress, &buffer, socklen_t(buffer.count)) }
        return String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }
}

/// Where webhooks (and other requests the server makes for users) may go: not to the
/// server's own machine or network. Loopback, unspecified, link-local, private, shared
/// (CGNAT), multicast and reserved addresses are refused, after DNS resolution, unless
/// the operator allows them. The check covers every address a name resolves to.
public struct EgressPolicy: Sendable {
    public let allowed: [IPNetwork]

    public init(allowed: [IPNetwork] = []) { self.allowed = allowed }

    static let refused: [(IPNetwork, String)] = [
        ("0.0.0.0/8", "unspecified"), ("10.0.0.0/8", "private"), ("100.64.0.0/10", "shared (CGNAT)"), ("127.0.0.0/8", "loopback"),
        ("169.254.0.0/16", "link-local"), ("172.16.0.0/12", "private"), ("192.0.0.0/24", "reserved"), ("192.168.0.0/16", "private"),
        ("198.18.0.0/15", "benchmarking"), ("224.0.0.0/4", "multicast"), ("240.0.0.0/4", "reserved"), ("::/128", "unspecified"),
        ("::1/128", "loopback"), ("64:ff9b::/96", "NAT64"), ("fc00::/7", "private"),
        ("fe80::/10", "link-local"), ("ff00::/8", "multicast"),
    ].map { (IPNetwork($0.0)!, $0.1) }

    /// Why an address may not be reached, or nil when it may.
    public func refusal(_ address: [UInt8]) -> String? {
        if allowed.contains(where: { $0.contains(address) }) { return nil }
        // An IPv4-mapped IPv6 address is judged as the IPv4 address it maps.
        if address.count == 16, address[0..<10].allSatisfy({ $0 == 0 }), address[10] == 0xFF, address[11] == 0xFF {
            return refusal(Array(address[12..<16]))
        }
        return Self.refused.first { $0.0.contains(address) }.map { "\(IPNetwork.format(address)) is \($0.1)" }
    }

    /// Resolves `host` and checks every address; returns them, or throws why not.
    public func check(host: String) throws -> [[UInt8]] {
        let name = host.hasPrefix("[") && host.hasSuffix("]") ? String(host.dropFirst().dropLast()) : host
        let addresses: [[UInt8]]
        if let literal = IPNetwork.parseAddress(name) {
            addresses = [literal]
        } else {
            addresses = try Self.resolve(name)
        }
        guard !addresses.isEmpty else { throw EgressError("\(host) does not resolve to any address") }
        for address in addresses {
            if let reason = refusal(address) {
                throw EgressError("\(host) resolves to \(reason); webhooks and graders may not reach private networks (an operator can allow a range with --webhook-allow)")
            }
        }
        return addresses
    }

    static func resolve(_ host: String) throws -> [[UInt8]] {
        var hints = addrinfo()
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        var result: UnsafeMutablePointer<addrinfo>?
        let status = getaddrinfo(host, nil, &hints, &result)
        guard status == 0, let first = result else {
            throw EgressError("cannot resolve \(host): \(String(cString: gai_strerror(status)))", isUnresolved: true)
        }
        defer { freeaddrinfo(first) }
        var addresses: [[UInt8]] = []
        var cursor: UnsafeMutablePointer<addrinfo>? = first
        while let info = cursor {
            if let sockaddr = info.pointee.ai_addr {
                if info.pointee.ai_family == AF_INET {
                    var v4 = sockaddr.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { $0.pointee.sin_addr }
                    addresses.append(withUnsafeBytes(of: &v4) { Array($0) })
                } else if info.pointee.ai_family == AF_INET6 {
                    var v6 = sockaddr.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { $0.pointee.sin6_addr }
                    addresses.append(withUnsafeBytes(of: &v6) { Array($0) })
                }
            }
            cursor = info.pointee.ai_next
        }
        return addresses
    }
}

public struct EgressError: LocalizedError, CustomStringConvertible {
    public var errorDescription: String? { description }
    public let description: String
    /// The name did not resolve (now): no address was refused.
    public var isUnresolved = false
    init(_ description: String, isUnresolved: Bool = false) {
        self.description = description
        self.isUnresolved = isUnresolved
    }
}
