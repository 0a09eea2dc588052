import Foundation

/// JSON text already known to be valid (a JSON column written by this service),
/// embedded as is instead of being parsed and written again on every request.
struct RawJSON {
    let text: String
}

/// Writes response bodies. Foundation's JSONSerialization on Linux bridges every
/// value through NSDictionary and sorts keys with locale collation (ICU): it was
/// three quarters of the time of a GET. This writes Swift values directly, keys
/// in byte order, so the output is deterministic.
enum JSONWriter {
    static func encode(_ value: Any) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(1024)
        write(value, into: &out)
        return out
    }

    static func write(_ value: Any, into out: inout [UInt8]) {
        // Exact dynamic types first: a failed `as?` cast walks the type's conformances and
        // bridging, and a response object has dozens of values (it was a fifth of a GET).
        let type = ObjectIdentifier(Swift.type(of: value))
        if type == stringType { return writeString(value as! String, into: &out) }
        if type == intType { return writeInteger(Int64(value as! Int), into: &out) }
        if type == objectType { return writeObject(value as! [String: Any], into: &out) }
        if type == rawType { out += (value as! RawJSON).text.utf8; return }
        if type == doubleType { return writeDouble(value as! Double, into: &out) }
        if type == boolType { out += ((value as! Bool) ? "true" : "false").utf8; return }
        if type == doublesType { return writeArray(value as! [Double], into: &out) { writeDouble($0, into: &$1) } }
        if type == intsType { return writeArray(value as! [Int], into: &out) { writeInteger(Int64($0), into: &$1) } }
        if type == nullType { out += "null".utf8; return }
        if type == stringsType { return writeArray(value as! [String], into: &out) { writeString($0, into: &$1) } }
        if type == anysType { return writeArray(value as! [Any], into: &out) { write($0, into: &$1) } }
        switch value {
        case let object as [String: Any]: writeObject(object, into: &out)
        case let array as [Any]: writeArray(array, into: &out) { write($0, into: &$1) }
        case is NSNull: out += "null".utf8
        case let number as NSNumber: writeNumber(number, into: &out)
        case let substring as Substring: writeString(String(substring), into: &out)
        // Enums such as JobStatus are written as their raw value, as Codable would.
        case let raw as any RawRepresentable<String>: writeString(raw.rawValue, into: &out)
        default:
            assertionFailure("JSONWriter cannot write a \(Swift.type(of: value)); it wrote null")
            out += "null".utf8
        }
    }

    private static let stringType = ObjectIdentifier(String.self), intType = ObjectIdentifier(Int.self)
    private static let objectType = ObjectIdentifier([String: Any].self), rawType = ObjectIdentifier(RawJSON.self)
    private static let doubleType = ObjectIdentifier(Double.self), boolType = ObjectIdentifier(Bool.self)
    private static let doublesType = ObjectIdentifier([Double].self), intsType = ObjectIdentifier([Int].self)
    private static let nullType = ObjectIdentifier(NSNull.self), stringsType = ObjectIdentifier([String].self)
    private static let anysType = ObjectIdentifier([Any].self)

    static func writeObject(_ object: [String: Any], into out: inout [UInt8]) {
        out.append(UInt8(ascii: "{"))
        for (i, element) in object.sorted(by: { $0.key < $1.key }).enumerated() {
            if i > 0 { out.append(UInt8(ascii: ",")) }
            writeString(element.key, into: &out)
            out.append(UInt8(ascii: ":"))
            write(element.value, into: &out)
        }
        out.append(UInt8(ascii: "}"))
    }

    static func writeArray<Element>(_ array: [Element], into out: inout [UInt8], _ element: (Element, inout [UInt8]) -> Void) {
        out.append(UInt8(ascii: "["))
        for (i, value) in array.enumerated() {
            if i > 0 { out.append(UInt8(ascii: ",")) }
            element(value, &out)
        }
        out.append(UInt8(ascii: "]"))
    }

    static func writeInteger(_ value: Int64, into out: inout [UInt8]) { out += String(value).utf8 }

    static func writeDouble(_ double: Double, into out: inout [UInt8]) {
        guard double.isFinite else { out += "null".utf8; return }
        if double == double.rounded(), abs(double) < 1e15 { out += String(Int64(double)).utf8 } else { out += "\(double)".utf8 }
    }

    /// Swift numbers and Bools arrive as NSNumber here; its type code tells them apart.
    static func writeNumber(_ number: NSNumber, into out: inout [UInt8]) {
        switch String(cString: number.objCType) {
        case "c", "B": out += (number.boolValue ? "true" : "false").utf8
        case "f", "d": writeDouble(number.doubleValue, into: &out)
        default: writeInteger(number.int64Value, into: &out)
        }
    }

    static func writeString(_ text: String, into out: inout [UInt8]) {
        out.append(UInt8(ascii: "\""))
        // Most strings (ids, names, statuses) need no escape: copy them whole.
        if !text.utf8.contains(where: { $0 < 0x20 || $0 == UInt8(ascii: "\"") || $0 == UInt8(ascii: "\\") }) {
            out += text.utf8
            out.append(UInt8(ascii: "\""))
            return
        }
        for byte in text.utf8 {
            switch byte {
            case UInt8(ascii: "\""): out += [0x5C, 0x22]
            case UInt8(ascii: "\\"): out += [0x5C, 0x5C]
            case 0x0A: out += [0x5C, UInt8(ascii: "n")]
            case 0x0D: out += [0x5C, UInt8(ascii: "r")]
            case 0x09: out += [0x5C, UInt8(ascii: "t")]
            case 0..<0x20: out += Array(String(format: "\\u%04x", byte).utf8)
            default: out.append(byte)
            }
        }
        out.append(UInt8(ascii: "\""))
    }
}
